//! An in-memory [`Storage`] and [`Authenticator`] for tests, embedding and the
//! simulator, with switches to inject faults. No I/O: everything lives in a map.

/// Faults a [`MemStorage`] can be told to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Writes fail with `NoSpace` once the total stored bytes would exceed this.
    pub capacity: Option<u64>,
    /// Every operation fails with `Io`.
    pub io_error: bool,
    /// Writes accept at most this many bytes per call (short writes).
    pub short_writes: Option<usize>,
}

/// An in-memory file tree. Uploads become visible only on commit (Replace and Unique)
/// or as they are written (Append and At), like the disk storage.
pub struct MemStorage {
    _todo: (),
}

/// A fixed list of users with plain-text passwords, for tests.
pub struct MemUsers {
    _todo: (),
}
