//! Listing one directory of a [`crate::localfs::LocalFs`] on Linux (LIST, NLST, MLSD).
//!
//! The directory is opened through the sandboxed root (`cap_std`), so reaching it obeys
//! the same rules as every other operation. Its names are read with `getdents64`, 64 KiB
//! at a time, into a few buffers (no allocation per name), and each name is `fstatat`ed
//! relative to the open directory with `AT_SYMLINK_NOFOLLOW`: one path component, never
//! `.` or `..`, never followed, so no lookup can leave the directory and none walks a
//! path from the root. Symlinks are then resolved exactly as before, through the
//! sandboxed root ([`crate::localfs::LocalFs`]'s `entry`).
//!
//! A directory bigger than one `getdents64` buffer is stated by its own thread and, when
//! they are free, the process's listing helpers (one thread fewer than the cores): a
//! 10,000-entry directory is ~10 ms of `fstatat` on one core, work the kernel does in
//! parallel without contention (RCU lookups; each entry its own dentry and inode). The
//! helpers start on the first names while the listing's thread reads the rest. They are
//! opportunistic: the listing's thread waits only for chunks a helper has already
//! taken, never for a helper that has not started (busy with another listing, or not
//! scheduled on a loaded machine).

use std::collections::VecDeque;
use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};
use wharf_core::{FileKind, Metadata};

/// Names stated together: small enough that waiting for a helper's last chunk is short
/// (~50 µs of work), big enough that handing chunks out costs nothing.
const CHUNK: usize = 64;

/// A few names of a directory, each NUL-terminated, one after the other in one buffer.
pub(crate) struct Names {
    bytes: Vec<u8>,
    /// Where each name starts in `bytes`.
    starts: Vec<usize>,
}

impl Names {
    fn new() -> Names {
        Names {
            bytes: Vec::with_capacity(CHUNK * 24),
            starts: Vec::with_capacity(CHUNK),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Name `i`, with its NUL.
    pub(crate) fn get(&self, i: usize) -> &CStr {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.bytes.len());
        // Each name was pushed with exactly one NUL, at its end.
        CStr::from_bytes_with_nul(&self.bytes[self.starts[i]..end])
            .expect("names are NUL-terminated")
    }

    fn push(&mut self, name: &[u8]) {
        self.starts.push(self.bytes.len());
        self.bytes.extend_from_slice(name);
    }

    /// The names that could be stated, as (lossy) UTF-8, with their metadata.
    fn stat(&self, dir: &Dir) -> Vec<(String, Metadata)> {
        (0..self.len())
            .filter_map(|i| {
                let name = self.get(i);
                let meta = lstat_at(dir, name).ok()?;
                Some((String::from_utf8_lossy(name.to_bytes()).into_owned(), meta))
            })
            .collect()
    }
}

/// The names of one `getdents64` call, but `.`, `..` and those `skip` rejects, in
/// chunks of [`CHUNK`]; `None` at the end of the directory.
fn next_batch(
    raw: &mut RawDir<'_, rustix::fd::OwnedFd>,
    skip: &impl Fn(&[u8]) -> bool,
) -> io::Result<Option<Vec<Names>>> {
    let mut chunks: Vec<Names> = Vec::new();
    loop {
        let Some(entry) = raw.next() else {
            return Ok((!chunks.is_empty()).then_some(chunks));
        };
        let entry = entry?;
        let name = entry.file_name().to_bytes_with_nul();
        let bare = &name[..name.len() - 1];
        if !(bare == b"." || bare == b".." || skip(bare)) {
            match chunks.last_mut() {
                Some(last) if last.len() < CHUNK => last.push(name),
                _ => {
                    let mut chunk = Names::new();
                    chunk.push(name);
                    chunks.push(chunk);
                }
            }
        }
        if raw.is_buffer_empty() {
            return Ok(Some(chunks));
        }
    }
}

/// Every name in `dir` but `.`, `..` and those `skip` rejects, in directory order, with
/// its metadata ([`lstat_at`]); a name that cannot be stated (gone since it was read) is
/// left out. Names that are not UTF-8 are converted lossily (what a client can be shown).
pub(crate) fn list(dir: Dir, skip: impl Fn(&[u8]) -> bool) -> io::Result<Vec<(String, Metadata)>> {
    list_with(dir, skip, pool())
}

fn list_with(
    dir: Dir,
    skip: impl Fn(&[u8]) -> bool,
    pool: Option<&Pool>,
) -> io::Result<Vec<(String, Metadata)>> {
    // `cap_std` opens directories `O_PATH`, which `getdents64` refuses: open the same
    // directory again for reading, through itself (`.` is no path walk, and no symlink).
    let readable = rustix::fs::openat(
        &dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // 64 KiB holds ~1,500 entries of 20-byte names: a 10,000-entry directory is read in
    // seven calls.
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
    let mut raw = RawDir::new(readable, &mut buf);
    let Some(first) = next_batch(&mut raw, &skip)? else {
        return Ok(Vec::new());
    };
    let second = next_batch(&mut raw, &skip)?;
    let (second, pool) = match (second, pool) {
        (Some(second), Some(pool)) => (second, pool),
        (second, _) => {
            // One buffer, or one core: this thread states everything, a buffer at a
            // time.
            let mut out = Vec::new();
            for names in first.iter().chain(second.iter().flatten()) {
                out.extend(names.stat(&dir));
            }
            while let Some(batch) = next_batch(&mut raw, &skip)? {
                for names in batch {
                    out.extend(names.stat(&dir));
                }
            }
            return Ok(out);
        }
    };
    let job = Arc::new(Job {
        dir,
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    });
    {
        // Whatever happens, helpers waiting for names are let go.
        let closing = CloseOnDrop(&job);
        job.push(first);
        pool.call_helpers(&job);
        job.push(second);
        while let Some(batch) = next_batch(&mut raw, &skip)? {
            job.push(batch);
        }
        drop(closing);
    }
    job.work(false);
    let done = job.finish();
    let mut out = Vec::with_capacity(done.iter().map(|(_, entries)| entries.len()).sum());
    for (_, entries) in done {
        out.extend(entries);
    }
    Ok(out)
}

/// One big directory being stated by its thread and helpers.
struct Job {
    dir: Dir,
    state: Mutex<State>,
    /// Names were queued, the queue was closed, or the last chunk was stated.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Chunks not taken yet, with their place in the directory.
    todo: VecDeque<(usize, Names)>,
    /// Chunks queued so far.
    queued: usize,
    /// Every chunk is queued.
    closed: bool,
    done: Vec<(usize, Vec<(String, Metadata)>)>,
}

struct CloseOnDrop<'a>(&'a Job);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.changed.notify_all();
    }
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, chunks: Vec<Names>) {
        let mut st = self.lock();
        for names in chunks {
            let place = st.queued;
            st.todo.push_back((place, names));
            st.queued += 1;
        }
        drop(st);
        self.changed.notify_all();
    }

    /// States queued chunks until none is left. A helper also waits for the names the
    /// listing's thread is still reading; that thread itself works only once it has
    /// queued them all.
    fn work(&self, helper: bool) {
        let mut st = self.lock();
        loop {
            if let Some((place, names)) = st.todo.pop_front() {
                drop(st);
                let entries = names.stat(&self.dir);
                st = self.lock();
                st.done.push((place, entries));
                if st.closed && st.done.len() == st.queued {
                    self.changed.notify_all();
                }
            } else if st.closed || !helper {
                return;
            } else {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Every chunk with its metadata, in directory order, once all are stated. Called
    /// after the queue is closed and [`Job::work`] returned: every chunk has been taken,
    /// so only helpers that are stating one are waited for.
    fn finish(&self) -> Vec<(usize, Vec<(String, Metadata)>)> {
        let mut st = self.lock();
        while st.done.len() < st.queued {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let mut done = std::mem::take(&mut st.done);
        done.sort_unstable_by_key(|(place, _)| *place);
        done
    }
}

/// The listing helpers: threads that wait for [`Job`]s and help with them.
struct Pool {
    jobs: Mutex<mpsc::Sender<Arc<Job>>>,
    size: usize,
}

impl Pool {
    fn call_helpers(&self, job: &Arc<Job>) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..self.size {
            // The helpers never exit, so the channel stays open.
            let _ = jobs.send(job.clone());
        }
    }
}

/// The process's listing helpers, started at the first big listing; `None` on one core.
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let size = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
        let (tx, rx) = mpsc::channel::<Arc<Job>>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..size.min(15) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wharf-list-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job.work(true),
                        Err(_) => return,
                    }
                });
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then(|| Pool {
            jobs: Mutex::new(tx),
            size: started,
        })
    })
    .as_ref()
}

/// The metadata of `name` in `dir`, not following a symlink (`lstat`): the values
/// `cap_std`'s `symlink_metadata` gives, converted the way `LocalFs` converts those.
///
/// `fstatat` rather than `statx`: it has every field a listing shows, and measured ~5 %
/// less kernel time per entry on tmpfs (no mask handling, a smaller copy-out). Its
/// `st_dev` is the kernel's 32-bit encoding, which is what `makedev` of `statx`'s major
/// and minor gives for every device number Linux can hold.
pub(crate) fn lstat_at(dir: &Dir, name: &CStr) -> io::Result<Metadata> {
    let s = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(metadata(
        s.st_mode as u32,
        s.st_size as u64,
        time(s.st_mtime as i64, s.st_mtime_nsec as u32),
        s.st_dev as u64,
        s.st_ino as u64,
        s.st_nlink as u64,
    ))
}

fn metadata(
    mode: u32,
    size: u64,
    modified: Option<SystemTime>,
    dev: u64,
    ino: u64,
    nlink: u64,
) -> Metadata {
    let kind = match FileType::from_raw_mode(mode) {
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::File,
    };
    Metadata {
        kind,
        size,
        modified,
        mode: mode & 0o7777,
        unique: Some((dev, ino)),
        nlink,
    }
}

/// A timestamp as `cap_std` makes one (whole seconds, then the nanoseconds forward).
fn time(sec: i64, nsec: u32) -> Option<SystemTime> {
    if sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(sec.unsigned_abs(), nsec))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(sec.unsigned_abs()))?
            .checked_add(Duration::new(0, nsec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    fn dir_with(n: usize) -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..n {
            std::fs::write(tmp.path().join(format!("{i:05}")), vec![0; i % 5]).unwrap();
        }
        std::fs::write(tmp.path().join("skip-me"), b"").unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        (tmp, dir)
    }

    fn listed(dir: Dir, pool: Option<&Pool>) -> Vec<String> {
        let mut seen = Vec::new();
        for (name, meta) in list_with(dir, |n| n == b"skip-me", pool).unwrap() {
            assert_eq!(meta.size, name.parse::<u64>().unwrap() % 5);
            seen.push(name);
        }
        seen
    }

    #[test]
    fn every_name_once_in_directory_order() {
        // 5,000 names are three getdents64 buffers and ~80 chunks: helpers (when the
        // machine has a second core) take some while the names are still being read.
        // Without helpers, the listing's thread states them all, a buffer at a time.
        for (n, pool) in [0, 1, CHUNK + 1, 5000]
            .into_iter()
            .flat_map(|n| [(n, pool()), (n, None)])
        {
            let (tmp, dir) = dir_with(n);
            let mut want: Vec<_> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != "skip-me")
                .collect();
            let got = listed(dir, pool);
            assert_eq!(got.len(), n);
            // Same order as std's readdir; same set as what was created.
            assert_eq!(got, want, "{n} {}", pool.is_some());
            want.sort();
            assert_eq!(want, (0..n).map(|i| format!("{i:05}")).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_late_helper_finds_nothing_to_do_and_nobody_waits_for_it() {
        let (_tmp, dir) = dir_with(300);
        let job = Job {
            dir,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        };
        let mut chunks = Vec::new();
        for i in 0..300 {
            if i % CHUNK == 0 {
                chunks.push(Names::new());
            }
            chunks
                .last_mut()
                .unwrap()
                .push(format!("{i:05}\0").as_bytes());
        }
        job.push(chunks);
        drop(CloseOnDrop(&job));
        // The listing's own thread states every chunk and collects them without
        // waiting for a helper (none ever started).
        job.work(false);
        let done = job.finish();
        assert_eq!(done.len(), 300usize.div_ceil(CHUNK));
        assert!(done.iter().enumerate().all(|(i, (place, _))| i == *place));
        let sizes: Vec<u64> = done
            .iter()
            .flat_map(|(_, entries)| entries.iter().map(|(_, m)| m.size))
            .collect();
        assert_eq!(sizes, (0..300).map(|i| i % 5).collect::<Vec<_>>());
        // A helper that gets to it now returns at once.
        job.work(true);
        assert_eq!(job.lock().done.len(), 0);
    }

    #[test]
    fn a_helper_waits_for_names_still_being_read() {
        let (_tmp, dir) = dir_with(3);
        let job = Arc::new(Job {
            dir,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let helper = std::thread::spawn({
            let job = job.clone();
            move || job.work(true)
        });
        for i in 0..3 {
            let mut names = Names::new();
            names.push(format!("{i:05}\0").as_bytes());
            job.push(vec![names]);
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(CloseOnDrop(&job));
        helper.join().unwrap();
        job.work(false);
        let done = job.finish();
        assert_eq!(done.len(), 3);
        assert!(done.iter().all(|(_, entries)| entries.len() == 1));
    }
}
