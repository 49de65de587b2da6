//! An in-memory [`Storage`] and [`Authenticator`] for tests, embedding and the
//! simulator, with switches to inject faults. No I/O: everything lives in a map.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Cursor};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{
    AuthError, Authenticator, DirEntry, Download, FileKind, FsError, Metadata, Principal, Storage,
    Upload, WriteMode,
};
use crate::path::VPath;
use transfer::{to_io, MemDownload, MemUpload, Target};

/// Faults a [`MemStorage`] can be told to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Writes fail with `NoSpace` once the stored bytes plus those held by uncommitted
    /// uploads would exceed this (a write that partly fits is cut short first).
    pub capacity: Option<u64>,
    /// Every operation fails with `Io`, as do reads and writes of open files.
    pub io_error: bool,
    /// Writes accept at most this many bytes per call (short writes).
    pub short_writes: Option<usize>,
}

/// The wall clock of a fresh storage (2023-11-14T22:13:20Z), so tests are reproducible.
const DEFAULT_TIME: Duration = Duration::from_secs(1_700_000_000);
/// The device number in `Metadata::unique`.
const DEVICE: u64 = 1;

#[derive(Debug, Clone)]
enum Body {
    Dir,
    File(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Node {
    body: Body,
    modified: SystemTime,
    id: u64,
}

impl Node {
    fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir)
    }

    fn meta(&self) -> Metadata {
        let (kind, size, mode, nlink) = match &self.body {
            Body::Dir => (FileKind::Dir, 0, 0o755, 2),
            Body::File(b) => (FileKind::File, b.len() as u64, 0o644, 1),
        };
        Metadata {
            kind,
            size,
            modified: Some(self.modified),
            mode,
            unique: Some((DEVICE, self.id)),
            nlink,
        }
    }
}

/// Everything behind the lock. Keys are `VPath` strings, so a directory's descendants
/// sort contiguously after `dir/`.
#[derive(Debug)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Names STOU handed out whose uploads are not yet committed.
    reserved: BTreeSet<String>,
    /// Bytes held by uncommitted Replace/Unique uploads (they count against capacity).
    pending: u64,
    next_id: u64,
    now: SystemTime,
    faults: Faults,
    /// What a power cut would keep, when modelled (the simulator's crashes).
    crash: Option<crash::CrashModel>,
}

fn injected() -> FsError {
    FsError::Io("injected i/o fault".into())
}

fn lock(tree: &Mutex<Tree>) -> MutexGuard<'_, Tree> {
    // A panic in a test thread must not wedge every later operation.
    tree.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn vpath(path: &str) -> VPath {
    VPath::root().resolve(path).expect("test path contains NUL")
}

/// `dir/` for a directory key, so prefix ranges select exactly its descendants.
fn dir_prefix(dir: &str) -> String {
    if dir == "/" {
        "/".to_owned()
    } else {
        format!("{dir}/")
    }
}

impl Tree {
    fn new(now: SystemTime) -> Tree {
        let mut t = Tree {
            nodes: BTreeMap::new(),
            reserved: BTreeSet::new(),
            pending: 0,
            next_id: 1,
            now,
            faults: Faults::default(),
            crash: None,
        };
        let root = t.new_node(Body::Dir);
        t.nodes.insert("/".into(), root);
        t
    }

    fn new_node(&mut self, body: Body) -> Node {
        self.next_id += 1;
        Node {
            body,
            modified: self.now,
            id: self.next_id - 1,
        }
    }

    fn check_io(&self) -> Result<(), FsError> {
        if self.faults.io_error {
            return Err(injected());
        }
        Ok(())
    }

    fn node(&self, path: &VPath) -> Result<&Node, FsError> {
        self.nodes.get(path.as_str()).ok_or(FsError::NotFound)
    }

    /// The parent must exist and be a directory before anything is created in it.
    fn check_parent(&self, path: &VPath) -> Result<(), FsError> {
        let parent = path.parent().ok_or(FsError::AlreadyExists)?;
        match self.node(&parent)?.is_dir() {
            true => Ok(()),
            false => Err(FsError::NotADirectory),
        }
    }

    fn touch_parent(&mut self, path: &VPath) {
        let now = self.now;
        if let Some(node) = path.parent().and_then(|p| self.nodes.get_mut(p.as_str())) {
            node.modified = now;
        }
    }

    fn children<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let prefix = dir_prefix(dir);
        let len = prefix.len();
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(move |(k, n)| (&k[len..], n))
            .filter(|(name, _)| !name.is_empty() && !name.contains('/'))
    }

    fn stored(&self) -> u64 {
        let files = self.nodes.values().map(|n| match &n.body {
            Body::File(b) => b.len() as u64,
            Body::Dir => 0,
        });
        files.sum()
    }

    /// How many of `want` bytes may be written when `growth` of them enlarge the store:
    /// all of them if they fit, else those that overwrite plus whatever room is left.
    fn admit(&self, want: usize, growth: u64) -> io::Result<usize> {
        let Some(cap) = self.faults.capacity else {
            return Ok(want);
        };
        let room = cap.saturating_sub(self.stored() + self.pending);
        if growth <= room {
            return Ok(want);
        }
        let overwrite = want as u64 - growth;
        match usize::try_from(overwrite + room).unwrap_or(want) {
            0 => Err(to_io(FsError::NoSpace)),
            n => Ok(n),
        }
    }

    /// The first of `path`, `path.1`, `path.2`, ... that is neither stored nor promised.
    fn unique_name(&self, path: &VPath) -> VPath {
        let taken =
            |p: &VPath| self.nodes.contains_key(p.as_str()) || self.reserved.contains(p.as_str());
        if !taken(path) {
            return path.clone();
        }
        let parent = path.parent().unwrap_or_else(VPath::root);
        let name = path.file_name().unwrap_or("file");
        (1u64..)
            .filter_map(|i| parent.resolve(&format!("{name}.{i}")).ok())
            .find(|p| !taken(p))
            .expect("unbounded search")
    }

    /// Moves `from` and everything below it to `to` (whose slot is already cleared).
    fn move_subtree(&mut self, from: &VPath, to: &VPath) {
        let prefix = dir_prefix(from.as_str());
        let mut keys = vec![from.as_str().to_owned()];
        keys.extend(
            self.nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone()),
        );
        for key in keys {
            if let Some(node) = self.nodes.remove(&key) {
                let moved = format!("{}{}", to.as_str(), &key[from.as_str().len()..]);
                self.nodes.insert(moved, node);
            }
        }
    }
}

/// An in-memory file tree. Uploads become visible only on commit (Replace and Unique)
/// or as they are written (Append and At), like the disk storage.
///
/// Clones share the same tree, so a test can keep a handle to the storage it gave away.
/// Every node reports `unique: Some((1, id))`; directories are `0o755`, files `0o644`.
#[derive(Clone)]
pub struct MemStorage {
    tree: Arc<Mutex<Tree>>,
}

impl Default for MemStorage {
    fn default() -> Self {
        MemStorage::new()
    }
}

impl std::fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStorage")
            .field("paths", &self.paths())
            .finish()
    }
}

/// Test helpers. Paths are resolved from the root; they bypass [`Faults`].
impl MemStorage {
    /// An empty tree (just `/`) with the clock at 2023-11-14T22:13:20Z.
    pub fn new() -> MemStorage {
        MemStorage {
            tree: Arc::new(Mutex::new(Tree::new(UNIX_EPOCH + DEFAULT_TIME))),
        }
    }

    /// Sets the wall clock that stamps every later change.
    pub fn set_time(&self, now: SystemTime) {
        lock(&self.tree).now = now;
    }

    /// Replaces the active faults (`Faults::default()` turns them all off).
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.tree).faults = faults;
    }

    /// Creates a directory and any missing ancestors, like `mkdir -p`.
    ///
    /// # Panics
    /// If a file is in the way.
    pub fn add_dir(&self, path: &str) {
        let mut t = lock(&self.tree);
        let mut at = VPath::root();
        for seg in vpath(path).segments() {
            at = at.resolve(seg).expect("segment of a VPath");
            match t.nodes.get(at.as_str()) {
                Some(n) => assert!(n.is_dir(), "add_dir: {at} is a file"),
                None => {
                    let node = t.new_node(Body::Dir);
                    if let Some(cm) = &mut t.crash {
                        cm.durable_now(at.as_str(), node.id, None);
                    }
                    t.nodes.insert(at.as_str().to_owned(), node);
                }
            }
        }
    }

    /// Creates or replaces a file, creating missing ancestors.
    ///
    /// # Panics
    /// If `path` is the root or a directory, or a file is in the way.
    pub fn add_file(&self, path: &str, bytes: &[u8]) {
        let path = vpath(path);
        let parent = path.parent().expect("add_file: the root is a directory");
        self.add_dir(parent.as_str());
        let mut t = lock(&self.tree);
        assert!(
            !t.node(&path).is_ok_and(Node::is_dir),
            "add_file: {path} is a directory"
        );
        let node = t.new_node(Body::File(bytes.to_vec()));
        if let Some(cm) = &mut t.crash {
            cm.durable_now(path.as_str(), node.id, Some(bytes));
        }
        t.nodes.insert(path.as_str().to_owned(), node);
    }

    /// A file's committed bytes; `None` for a directory or a missing path.
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        match &lock(&self.tree).nodes.get(vpath(path).as_str())?.body {
            Body::File(b) => Some(b.clone()),
            Body::Dir => None,
        }
    }

    /// Whether a file or directory exists at `path`.
    pub fn exists(&self, path: &str) -> bool {
        lock(&self.tree).nodes.contains_key(vpath(path).as_str())
    }

    /// How many files (not directories) are stored.
    pub fn file_count(&self) -> usize {
        let t = lock(&self.tree);
        t.nodes.values().filter(|n| !n.is_dir()).count()
    }

    /// Every stored path except the root, sorted; directories included.
    pub fn paths(&self) -> Vec<String> {
        let t = lock(&self.tree);
        t.nodes
            .keys()
            .filter(|k| k.as_str() != "/")
            .cloned()
            .collect()
    }

    /// Starts modelling what a power cut would keep (see the `crash` module): from now
    /// on, changes become durable only through the `fsync`s a durable disk storage
    /// makes, and every such step is a crash point. Everything stored now is durable.
    pub fn enable_crash_model(&self) {
        let mut t = lock(&self.tree);
        let model = crash::CrashModel::new(&t.nodes);
        t.crash = Some(model);
    }

    /// Whether changes are synced before they are acknowledged, as `LocalFs` does with
    /// `durable_writes` (the default). Only the crash model can tell the difference.
    pub fn set_durable(&self, durable: bool) {
        if let Some(cm) = &mut lock(&self.tree).crash {
            cm.durable = durable;
        }
    }

    /// Arms a crash before the `n`th durability step from now (1: the next one): that
    /// step and every later one never reach the disk. See [`MemStorage::crashed`].
    pub fn crash_after_steps(&self, n: u64) {
        if let Some(cm) = &mut lock(&self.tree).crash {
            cm.crash_after(n);
        }
    }

    /// Crashes now (between steps): nothing from here on reaches the disk.
    pub fn crash_now(&self) {
        if let Some(cm) = &mut lock(&self.tree).crash {
            cm.crash_now("time");
        }
    }

    /// The step before which the machine went down, once it has.
    pub fn crashed(&self) -> Option<&'static str> {
        lock(&self.tree).crash.as_ref().and_then(|cm| cm.crashed)
    }

    /// The power cut and the restart: the tree becomes what the disk held (durable
    /// changes, and at random some of the others, from `seed`); uploads in progress
    /// are gone. Drop every open upload first. Without the crash model, nothing changes.
    pub fn power_cut(&self, seed: u64) {
        let mut t = lock(&self.tree);
        let Tree { nodes, crash, .. } = &mut *t;
        let Some(cm) = crash else { return };
        let mut x = seed | 1;
        let mut rand = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        };
        *nodes = cm.recover(nodes, &mut rand);
        t.reserved.clear();
        t.pending = 0;
    }

    /// Bytes in committed files plus bytes held by uploads not yet committed.
    pub fn used_bytes(&self) -> u64 {
        let t = lock(&self.tree);
        t.stored() + t.pending
    }

    /// Opens a file to write in place (created if missing and `offset` is 0): the
    /// position to start at.
    fn open_in_place(t: &mut Tree, path: &VPath, offset: Option<u64>) -> Result<u64, FsError> {
        let len = match t.nodes.get(path.as_str()).map(|n| &n.body) {
            Some(Body::Dir) => return Err(FsError::IsADirectory),
            Some(Body::File(b)) => b.len() as u64,
            None if offset.unwrap_or(0) == 0 => {
                let node = t.new_node(Body::File(Vec::new()));
                if let Some(cm) = &mut t.crash {
                    cm.change("create", "", &[], |cm| {
                        cm.link(path.as_str(), node.id, false)
                    });
                }
                t.nodes.insert(path.as_str().to_owned(), node);
                t.touch_parent(path);
                0
            }
            None => return Err(FsError::Io("offset beyond end".into())),
        };
        match offset {
            Some(at) if at > len => Err(FsError::Io("offset beyond end".into())),
            Some(at) => Ok(at),
            None => Ok(len),
        }
    }
}

impl Storage for MemStorage {
    fn stat(&self, path: &VPath) -> Result<Metadata, FsError> {
        let t = lock(&self.tree);
        t.check_io()?;
        Ok(t.node(path)?.meta())
    }

    fn read_dir(&self, path: &VPath) -> Result<Vec<DirEntry>, FsError> {
        let t = lock(&self.tree);
        t.check_io()?;
        if !t.node(path)?.is_dir() {
            return Err(FsError::NotADirectory);
        }
        let entries = t.children(path.as_str()).map(|(name, node)| DirEntry {
            name: name.to_owned(),
            meta: node.meta(),
        });
        Ok(entries.collect())
    }

    /// The size returned is the whole file's, whatever the offset.
    fn open_read(&self, path: &VPath, offset: u64) -> Result<(Box<dyn Download>, u64), FsError> {
        let t = lock(&self.tree);
        t.check_io()?;
        let Body::File(bytes) = &t.node(path)?.body else {
            return Err(FsError::IsADirectory);
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let body = Cursor::new(bytes[start..].to_vec());
        let size = bytes.len() as u64;
        let tree = Arc::clone(&self.tree);
        Ok((Box::new(MemDownload { tree, body }), size))
    }

    fn open_write(
        &self,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<(Box<dyn Upload>, VPath), FsError> {
        let mut t = lock(&self.tree);
        t.check_io()?;
        if path.is_root() {
            return Err(FsError::IsADirectory);
        }
        t.check_parent(path)?;
        let is_dir = t.node(path).is_ok_and(Node::is_dir);
        let (path, target) = match mode {
            WriteMode::Replace if is_dir => return Err(FsError::IsADirectory),
            WriteMode::Replace => (
                path.clone(),
                Target::Pending {
                    buf: Vec::new(),
                    reserved: false,
                },
            ),
            WriteMode::Unique => {
                let path = t.unique_name(path);
                t.reserved.insert(path.as_str().to_owned());
                (
                    path,
                    Target::Pending {
                        buf: Vec::new(),
                        reserved: true,
                    },
                )
            }
            WriteMode::Append => {
                let pos = Self::open_in_place(&mut t, path, None)?;
                (path.clone(), Target::InPlace { pos })
            }
            WriteMode::At(offset) => {
                let pos = Self::open_in_place(&mut t, path, Some(offset))?;
                (path.clone(), Target::InPlace { pos })
            }
        };
        let tree = Arc::clone(&self.tree);
        let upload = MemUpload {
            tree,
            path: path.clone(),
            target,
        };
        Ok((Box::new(upload), path))
    }

    fn make_dir(&self, path: &VPath) -> Result<(), FsError> {
        let mut t = lock(&self.tree);
        t.check_io()?;
        if t.nodes.contains_key(path.as_str()) {
            return Err(FsError::AlreadyExists);
        }
        t.check_parent(path)?;
        let node = t.new_node(Body::Dir);
        if let Some(cm) = &mut t.crash {
            let parent = crash::parent_of(path.as_str());
            cm.change("mkdir", "mkdir:fsync-dir", &[parent], |cm| {
                cm.link(path.as_str(), node.id, true)
            });
        }
        t.nodes.insert(path.as_str().to_owned(), node);
        t.touch_parent(path);
        Ok(())
    }

    fn remove_dir(&self, path: &VPath) -> Result<(), FsError> {
        let mut t = lock(&self.tree);
        t.check_io()?;
        if !t.node(path)?.is_dir() {
            return Err(FsError::NotADirectory);
        }
        if path.is_root() {
            return Err(FsError::PermissionDenied);
        }
        if t.children(path.as_str()).next().is_some() {
            return Err(FsError::NotEmpty);
        }
        if let Some(cm) = &mut t.crash {
            let parent = crash::parent_of(path.as_str());
            cm.change("rmdir", "rmdir:fsync-dir", &[parent], |cm| {
                cm.unlink(path.as_str())
            });
        }
        t.nodes.remove(path.as_str());
        t.touch_parent(path);
        Ok(())
    }

    fn remove_file(&self, path: &VPath) -> Result<(), FsError> {
        let mut t = lock(&self.tree);
        t.check_io()?;
        if t.node(path)?.is_dir() {
            return Err(FsError::IsADirectory);
        }
        if let Some(cm) = &mut t.crash {
            let parent = crash::parent_of(path.as_str());
            cm.change("unlink", "unlink:fsync-dir", &[parent], |cm| {
                cm.unlink(path.as_str())
            });
        }
        t.nodes.remove(path.as_str());
        t.touch_parent(path);
        Ok(())
    }

    /// POSIX `rename`: replaces a file or an empty directory of the same kind.
    fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        self.rename_with(from, to, true)
    }

    /// Atomic: the check and the move happen under one lock.
    fn rename_noreplace(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        self.rename_with(from, to, false)
    }

    fn set_modified(&self, path: &VPath, modified: SystemTime) -> Result<(), FsError> {
        let mut t = lock(&self.tree);
        t.check_io()?;
        let node = t.nodes.get_mut(path.as_str()).ok_or(FsError::NotFound)?;
        node.modified = modified;
        Ok(())
    }
}

impl MemStorage {
    fn rename_with(&self, from: &VPath, to: &VPath, replace: bool) -> Result<(), FsError> {
        let mut t = lock(&self.tree);
        t.check_io()?;
        let from_dir = t.node(from)?.is_dir();
        if from.is_root() || to.is_root() {
            return Err(FsError::PermissionDenied);
        }
        t.check_parent(to)?;
        if !replace && t.node(to).is_ok() {
            return Err(FsError::AlreadyExists);
        }
        if from == to {
            return Ok(());
        }
        if from_dir && to.starts_with(from) {
            return Err(FsError::BadName); // EINVAL: a directory into itself
        }
        if let Ok(dest) = t.node(to) {
            match (from_dir, dest.is_dir()) {
                (false, true) => return Err(FsError::IsADirectory),
                (true, false) => return Err(FsError::NotADirectory),
                (true, true) if t.children(to.as_str()).next().is_some() => {
                    return Err(FsError::NotEmpty)
                }
                _ => {}
            }
        }
        if let Some(cm) = &mut t.crash {
            let (pf, pt) = (
                crash::parent_of(from.as_str()),
                crash::parent_of(to.as_str()),
            );
            let dirs: &[&str] = if pf == pt { &[pt] } else { &[pt, pf] };
            cm.change("rename", "rename:fsync-dir", dirs, |cm| {
                cm.rename(from.as_str(), to.as_str())
            });
        }
        t.nodes.remove(to.as_str());
        t.move_subtree(from, to);
        t.touch_parent(from);
        t.touch_parent(to);
        Ok(())
    }
}

struct User {
    password: String,
    groups: Vec<String>,
}

/// A fixed list of users with plain-text passwords, for tests.
#[derive(Default)]
pub struct MemUsers {
    users: BTreeMap<String, User>,
}

impl std::fmt::Debug for MemUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemUsers")
            .field("users", &self.users.keys())
            .finish()
    }
}

impl MemUsers {
    pub fn new() -> MemUsers {
        MemUsers::default()
    }

    /// Adds (or replaces) a user.
    pub fn add(&mut self, name: &str, password: &str, groups: &[&str]) -> &mut MemUsers {
        let groups = groups.iter().map(|g| (*g).to_owned()).collect();
        let user = User {
            password: password.to_owned(),
            groups,
        };
        self.users.insert(name.to_owned(), user);
        self
    }

    /// [`MemUsers::add`] for building by value: `MemUsers::new().with("u", "p", &[])`.
    pub fn with(mut self, name: &str, password: &str, groups: &[&str]) -> MemUsers {
        self.add(name, password, groups);
        self
    }
}

/// Compares without stopping at the first difference, so timing leaks little.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x);
    }
    diff == 0
}

impl Authenticator for MemUsers {
    fn authenticate(
        &self,
        user: &str,
        password: &str,
        _peer: SocketAddr,
    ) -> Result<Principal, AuthError> {
        let Some(u) = self.users.get(user) else {
            // Spend the same work for an unknown user as for a wrong password.
            std::hint::black_box(same_secret(password.as_bytes(), password.as_bytes()));
            return Err(AuthError::BadCredentials);
        };
        if !same_secret(u.password.as_bytes(), password.as_bytes()) {
            return Err(AuthError::BadCredentials);
        }
        Ok(Principal {
            name: user.to_owned(),
            groups: u.groups.clone(),
            anonymous: false,
        })
    }
}

mod crash;
mod transfer;

#[cfg(test)]
mod tests;
