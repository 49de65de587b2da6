//! Virtual paths: what a client names, resolved against its current directory and
//! confined to its root. A [`VPath`] is always absolute (`/` or `/a/b`), never contains
//! `.`, `..`, empty segments, or NUL, so nothing built from one can name a place above
//! the root it is later joined to.

/// A normalised absolute virtual path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VPath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path contains a NUL byte")]
    Nul,
}

impl VPath {
    /// `/`.
    pub fn root() -> VPath {
        VPath("/".into())
    }

    /// Resolves client input against `self` (the current directory): an input starting
    /// with `/` starts at the root; `.` and empty segments vanish; `..` goes up but never
    /// above the root (`/..` is `/`). Trailing and repeated slashes are ignored.
    pub fn resolve(&self, input: &str) -> Result<VPath, PathError> {
        let _ = input;
        todo!()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path without its leading `/` (`""` for the root), for joining to a directory.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }

    pub fn is_root(&self) -> bool {
        self.0.len() == 1
    }

    /// The containing directory; `None` for the root.
    pub fn parent(&self) -> Option<VPath> {
        todo!()
    }

    /// The last segment; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        todo!()
    }

    /// The segments, in order (none for the root).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.relative().split('/').filter(|s| !s.is_empty())
    }

    /// `self` placed below `base` (`/home` + `/a` = `/home/a`): a jailed user's path as
    /// the storage sees it.
    pub fn under(&self, base: &VPath) -> VPath {
        let _ = base;
        todo!()
    }

    /// Whether `self` is `base` or below it.
    pub fn starts_with(&self, base: &VPath) -> bool {
        let _ = base;
        todo!()
    }

    /// `self` with `base` removed from its front (`/home/a` less `/home` = `/a`); `None`
    /// when `self` is not below `base`.
    pub fn strip_base(&self, base: &VPath) -> Option<VPath> {
        let _ = base;
        todo!()
    }
}

impl std::fmt::Display for VPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
