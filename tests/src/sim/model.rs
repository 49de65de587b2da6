//! The reference model: what a client believes the file tree holds. Each client owns
//! `/c<i>` (nobody else writes there), everyone reads the fixed `/pub`, so a client's
//! model is exact for its own directory and unknown for the others'.

use std::collections::BTreeMap;

use wharf_core::memfs::MemStorage;

use super::rng::Rng;

/// The shared read-only area: path and length (contents derive from the path).
pub const PUB_FILES: &[(&str, usize)] = &[
    ("/pub/readme.txt", 130),
    ("/pub/big.bin", 12_000),
    ("/pub/empty", 0),
    ("/pub/sub dir/q\"uote.txt", 33),
];

pub fn pub_content(path: &str, len: usize) -> Vec<u8> {
    Rng::stream(7, path).bytes(len)
}

/// The tree every run starts from.
pub fn populate(storage: &MemStorage, clients: usize) {
    for (path, len) in PUB_FILES {
        storage.add_file(path, &pub_content(path, *len));
    }
    for i in 0..clients {
        storage.add_dir(&format!("/c{i}"));
    }
}

/// What the model knows about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    File(Vec<u8>),
    Dir,
    Missing,
    /// Another client's directory: anything may be there.
    Unknown,
}

/// A client's model: its own directory exactly, the rest of the tree by construction.
#[derive(Debug)]
pub struct Model {
    pub own: String,
    clients: usize,
    /// Paths below (and including) `own`: `None` for a directory, else file bytes.
    pub tree: BTreeMap<String, Option<Vec<u8>>>,
}

impl Model {
    pub fn new(me: usize, clients: usize) -> Model {
        let own = format!("/c{me}");
        let tree = BTreeMap::from([(own.clone(), None)]);
        Model { own, clients, tree }
    }

    pub fn is_own(&self, path: &str) -> bool {
        path == self.own || path.starts_with(&format!("{}/", self.own))
    }

    pub fn look(&self, path: &str) -> Look {
        if self.is_own(path) {
            return match self.tree.get(path) {
                Some(None) => Look::Dir,
                Some(Some(bytes)) => Look::File(bytes.clone()),
                None => Look::Missing,
            };
        }
        if path == "/" || path == "/pub" || path == "/pub/sub dir" {
            return Look::Dir;
        }
        if let Some((p, len)) = PUB_FILES.iter().find(|(p, _)| *p == path) {
            return Look::File(pub_content(p, *len));
        }
        let top = path[1..].split('/').next().unwrap_or("");
        let other_client = top
            .strip_prefix('c')
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < self.clients);
        if other_client {
            Look::Unknown
        } else {
            Look::Missing
        }
    }

    /// Sorted child names of a directory, if the model knows them.
    pub fn children(&self, dir: &str) -> Option<Vec<String>> {
        let mut names: Vec<String> = if self.is_own(dir) {
            let prefix = format!("{dir}/");
            let names = self.tree.keys().filter_map(|k| k.strip_prefix(&prefix));
            names
                .filter(|n| !n.contains('/'))
                .map(str::to_owned)
                .collect()
        } else if dir == "/" {
            let mut v: Vec<String> = (0..self.clients).map(|i| format!("c{i}")).collect();
            v.push("pub".into());
            v
        } else if dir == "/pub" || dir == "/pub/sub dir" {
            let prefix = format!("{dir}/");
            let names = PUB_FILES
                .iter()
                .filter_map(|(p, _)| p.strip_prefix(&prefix));
            let mut v: Vec<String> = names
                .map(|n| n.split('/').next().unwrap_or(n).to_owned())
                .collect();
            v.dedup();
            v
        } else {
            return None;
        };
        names.sort();
        Some(names)
    }

    /// Re-reads the own directory from storage (after an outcome the model cannot know).
    pub fn resync(&mut self, storage: &MemStorage) {
        let prefix = format!("{}/", self.own);
        self.tree.retain(|k, _| *k == self.own);
        for path in storage
            .paths()
            .into_iter()
            .filter(|p| p.starts_with(&prefix))
        {
            let body = storage.read_file(&path);
            self.tree.insert(path, body);
        }
    }

    /// Moves `from` (and what is below it) to `to`.
    pub fn rename(&mut self, from: &str, to: &str) {
        if from == to {
            return;
        }
        let below = format!("{from}/");
        let keys: Vec<String> = self
            .tree
            .keys()
            .filter(|k| *k == from || k.starts_with(&below))
            .cloned()
            .collect();
        self.tree.remove(to);
        for k in keys {
            let v = self.tree.remove(&k).expect("listed");
            self.tree.insert(format!("{to}{}", &k[from.len()..]), v);
        }
    }

    /// Compares the own directory with storage: the model must be exact.
    pub fn verify(&self, storage: &MemStorage) -> Result<(), String> {
        let prefix = format!("{}/", self.own);
        for path in storage
            .paths()
            .into_iter()
            .filter(|p| p.starts_with(&prefix))
        {
            let stored = storage.read_file(&path);
            match self.tree.get(&path) {
                Some(want) if *want == stored => {}
                Some(_) => return Err(format!("{path}: stored bytes differ from the model")),
                None => return Err(format!("{path}: stored but not in the model")),
            }
        }
        for path in self.tree.keys().filter(|p| **p != self.own) {
            if !storage.exists(path) {
                return Err(format!("{path}: in the model but not stored"));
            }
        }
        Ok(())
    }
}

/// Resolves `input` against `cwd` the way RFC 959 paths work: independent of the core's
/// own `VPath`, so the two check each other. `None` for a NUL byte.
pub fn normalize(cwd: &str, input: &str) -> Option<String> {
    if input.contains('\0') {
        return None;
    }
    let mut segs: Vec<&str> = Vec::new();
    let start = if input.starts_with('/') { "" } else { cwd };
    for seg in start.split('/').chain(input.split('/')) {
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    Some(format!("/{}", segs.join("/")))
}

pub fn parent(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => path[..i].into(),
    }
}
