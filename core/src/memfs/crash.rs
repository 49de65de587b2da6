//! What a power cut leaves of a [`MemStorage`](super::MemStorage): a model of durable
//! state, for the simulator (off unless [`MemStorage::enable_crash_model`] turns it on).
//!
//! The tree the sessions see is the *volatile* state. Beside it the model keeps what a
//! disk would hold after a crash, in the terms of POSIX `fsync`:
//!
//! - **Namespace operations** (a link of a new file, `mkdir`, `unlink`, `rmdir`,
//!   `rename`) are logged in order. `fsync` of a directory makes the logged operations
//!   on its entries durable (a rename across directories: once both are synced). At a
//!   crash, the durable ones survive, and so does a random prefix of the log (the
//!   kernel may have written back some, in order, as a journal does); an operation
//!   whose parent did not survive is lost with it.
//! - **File contents** survive as they were at the file's last `fsync`; what was
//!   written since may have reached the disk or not (each file, at random). A file
//!   never synced may come back empty: a rename before `fsync` is how a 0-byte file
//!   lands at a final name.
//!
//! Every durability step is a crash point ([`MemStorage::crash_after_steps`]): the
//! crash happens *before* the step, and nothing after it becomes durable. The steps of
//! an upload commit mirror `LocalFs` with `durable_writes`: `fsync` the file, link or
//! rename it to its name, `fsync` the directory.
//!
//! [`MemStorage::enable_crash_model`]: super::MemStorage::enable_crash_model
//! [`MemStorage::crash_after_steps`]: super::MemStorage::crash_after_steps

use std::collections::BTreeMap;

use super::{Body, Node};

/// One name in the durable namespace: which node (inode) it is, and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: u64,
    dir: bool,
}

/// A namespace operation, as issued.
#[derive(Debug, Clone)]
enum Op {
    /// A name now refers to a node (a new file or directory, or a file replacing one).
    Link {
        path: String,
        entry: Entry,
    },
    Unlink {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
}

#[derive(Debug, Clone)]
struct Logged {
    op: Op,
    /// Durable on the side of the first path's directory (`from` of a rename).
    synced_first: bool,
    /// Durable on the side of a rename's target directory.
    synced_second: bool,
}

impl Logged {
    fn durable(&self) -> bool {
        match self.op {
            Op::Rename { .. } => self.synced_first && self.synced_second,
            _ => self.synced_first,
        }
    }
}

/// The durable side of a storage.
#[derive(Debug, Clone)]
pub(super) struct CrashModel {
    /// The namespace as of the last recovery (or when the model started): durable.
    base: BTreeMap<String, Entry>,
    /// Namespace operations since then.
    log: Vec<Logged>,
    /// Each file node's contents as of its last `fsync`.
    synced: BTreeMap<u64, Vec<u8>>,
    /// Whether commits and namespace changes sync (`durable_writes`).
    pub(super) durable: bool,
    /// Durability steps taken so far.
    steps: u64,
    /// The crash happens before this step.
    crash_at: Option<u64>,
    /// Where it happened, once it has.
    pub(super) crashed: Option<&'static str>,
}

pub(super) fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn below(path: &str, dir: &str) -> bool {
    path.len() > dir.len()
        && path.starts_with(dir)
        && (dir == "/" || path.as_bytes()[dir.len()] == b'/')
}

impl CrashModel {
    /// Everything in `nodes` is durable to begin with.
    pub(super) fn new(nodes: &BTreeMap<String, Node>) -> CrashModel {
        let mut m = CrashModel {
            base: BTreeMap::new(),
            log: Vec::new(),
            synced: BTreeMap::new(),
            durable: true,
            steps: 0,
            crash_at: None,
            crashed: None,
        };
        m.settle(nodes);
        m
    }

    /// After a recovery (or at the start): the tree as it is is what the disk holds.
    fn settle(&mut self, nodes: &BTreeMap<String, Node>) {
        self.base.clear();
        self.synced.clear();
        self.log.clear();
        for (path, node) in nodes {
            let dir = node.is_dir();
            self.base.insert(path.clone(), Entry { id: node.id, dir });
            if let Body::File(b) = &node.body {
                self.synced.insert(node.id, b.clone());
            }
        }
    }

    /// Crash before the `n`th step from now (`n` = 1: the very next one).
    pub(super) fn crash_after(&mut self, n: u64) {
        self.crash_at = Some(self.steps + n.max(1));
    }

    pub(super) fn crash_now(&mut self, label: &'static str) {
        if self.crashed.is_none() {
            self.crashed = Some(label);
        }
    }

    /// A durability step: false if the machine is (or now goes) down before it.
    pub(super) fn step(&mut self, label: &'static str) -> bool {
        if self.crashed.is_some() {
            return false;
        }
        self.steps += 1;
        if self.crash_at == Some(self.steps) {
            self.crashed = Some(label);
            return false;
        }
        true
    }

    fn log(&mut self, op: Op) {
        self.log.push(Logged {
            op,
            synced_first: false,
            synced_second: false,
        });
    }

    /// A new name for a node (after its step).
    pub(super) fn link(&mut self, path: &str, id: u64, dir: bool) {
        let entry = Entry { id, dir };
        let path = path.to_owned();
        self.log(Op::Link { path, entry });
    }

    pub(super) fn unlink(&mut self, path: &str) {
        let path = path.to_owned();
        self.log(Op::Unlink { path });
    }

    pub(super) fn rename(&mut self, from: &str, to: &str) {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.log(Op::Rename { from, to });
    }

    /// A namespace change (step `label`: `op` logs it), then, with durability on, an
    /// `fsync` of each of `dirs` (step `sync_label` each).
    pub(super) fn change(
        &mut self,
        label: &'static str,
        sync_label: &'static str,
        dirs: &[&str],
        op: impl FnOnce(&mut Self),
    ) {
        if !self.step(label) {
            return;
        }
        op(self);
        if self.durable {
            for dir in dirs {
                if !self.step(sync_label) {
                    return;
                }
                self.sync_dir(dir);
            }
        }
    }

    /// A change made by a test helper: durable at once, and no crash point.
    pub(super) fn durable_now(&mut self, path: &str, id: u64, contents: Option<&[u8]>) {
        self.log.push(Logged {
            op: Op::Link {
                path: path.to_owned(),
                entry: Entry {
                    id,
                    dir: contents.is_none(),
                },
            },
            synced_first: true,
            synced_second: true,
        });
        if let Some(c) = contents {
            self.synced.insert(id, c.to_vec());
        }
    }

    /// `fsync` of a file: its contents now are durable.
    pub(super) fn sync_file(&mut self, id: u64, contents: &[u8]) {
        self.synced.insert(id, contents.to_vec());
    }

    /// `fsync` of a directory: every logged operation on its entries is durable.
    pub(super) fn sync_dir(&mut self, dir: &str) {
        for l in &mut self.log {
            match &l.op {
                Op::Link { path, .. } | Op::Unlink { path } => {
                    if parent_of(path) == dir {
                        l.synced_first = true;
                    }
                }
                Op::Rename { from, to } => {
                    if parent_of(from) == dir {
                        l.synced_first = true;
                    }
                    if parent_of(to) == dir {
                        l.synced_second = true;
                    }
                }
            }
        }
    }

    /// The power cut: the tree a restart finds, built from the durable state and, at
    /// random (`rand`), what the kernel may have written back. The model then starts
    /// over from it.
    pub(super) fn recover(
        &mut self,
        volatile: &BTreeMap<String, Node>,
        rand: &mut impl FnMut(u64) -> u64,
    ) -> BTreeMap<String, Node> {
        let mut names = self.base.clone();
        let prefix = rand(self.log.len() as u64 + 1) as usize;
        for (i, l) in self.log.iter().enumerate() {
            if i < prefix || l.durable() {
                apply(&mut names, &l.op);
            }
        }
        // Contents by node, as the volatile tree has them now.
        let current: BTreeMap<u64, &Node> = volatile.values().map(|n| (n.id, n)).collect();
        let mut out = BTreeMap::new();
        for (path, e) in names {
            let modified = current
                .get(&e.id)
                .map(|n| n.modified)
                .unwrap_or(std::time::UNIX_EPOCH);
            let body = if e.dir {
                Body::Dir
            } else {
                let synced = self.synced.get(&e.id).cloned().unwrap_or_default();
                let written_back = match current.get(&e.id).map(|n| &n.body) {
                    Some(Body::File(now)) if rand(2) == 1 => Some(now.clone()),
                    _ => None,
                };
                Body::File(written_back.unwrap_or(synced))
            };
            out.insert(
                path,
                Node {
                    body,
                    modified,
                    id: e.id,
                },
            );
        }
        self.settle(&out);
        self.crashed = None;
        self.crash_at = None;
        out
    }
}

/// Replays one operation on a namespace; one that no longer applies (its parent was
/// lost, its source is gone) is lost too.
fn apply(names: &mut BTreeMap<String, Entry>, op: &Op) {
    let parent_ok =
        |names: &BTreeMap<String, Entry>, p: &str| names.get(parent_of(p)).is_some_and(|e| e.dir);
    let has_children = |names: &BTreeMap<String, Entry>, p: &str| names.keys().any(|k| below(k, p));
    match op {
        Op::Link { path, entry } => {
            if !parent_ok(names, path) {
                return;
            }
            if names.get(path).is_some_and(|e| e.dir) {
                return;
            }
            names.insert(path.clone(), *entry);
        }
        Op::Unlink { path } => {
            if path != "/" && !has_children(names, path) {
                names.remove(path);
            }
        }
        Op::Rename { from, to } => {
            if from == to || !names.contains_key(from) || !parent_ok(names, to) {
                return;
            }
            if below(to, from) || (names.get(to).is_some_and(|e| e.dir) && has_children(names, to))
            {
                return;
            }
            names.remove(to);
            let moved: Vec<(String, Entry)> = names
                .iter()
                .filter(|(k, _)| *k == from || below(k, from))
                .map(|(k, e)| (k.clone(), *e))
                .collect();
            for (k, e) in moved {
                names.remove(&k);
                names.insert(format!("{to}{}", &k[from.len()..]), e);
            }
        }
    }
}
