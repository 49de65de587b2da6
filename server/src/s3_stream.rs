//! Object bodies in the background: the pump reads and writes these on an event loop, so
//! they never wait on the network. A download is fetched by a thread of its own into a
//! bounded read-ahead; an upload's full part is handed to one of its sending threads,
//! which sends it as one part of a multipart upload. When either cannot go on, `read`/`write` answer
//! `WouldBlock` and the runtime's waker ([`Download::set_waker`], [`Upload::set_waker`])
//! is woken once it can.
//!
//! Memory per transfer: a download holds at most [`READ_AHEAD`] plus one chunk; an upload
//! the part filling and the parts being sent, `(1 + parallel_parts) × part_size`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::Duration;

use wharf_core::backend::{Download, Upload};
use wharf_core::FsError;

use crate::s3::Client;

/// Bytes a download fetches ahead of the client.
pub const READ_AHEAD: usize = 1 << 20;
/// Bytes per read from the store's response.
const CHUNK: usize = 64 << 10;
/// Times a download resumes from where it was after its response broke.
const RESUMES: u32 = 4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(w) = waker.take() {
        w.wake();
    }
}

#[derive(Default)]
struct ReadState {
    chunks: VecDeque<Vec<u8>>,
    queued: usize,
    eof: bool,
    error: Option<FsError>,
    /// The reader is gone: the fetching thread stops.
    closed: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct ReadShared {
    state: Mutex<ReadState>,
    room: Condvar,
}

/// An object being downloaded from an offset.
pub struct S3Download {
    shared: Arc<ReadShared>,
}

impl S3Download {
    /// Starts fetching `key` from `offset` (of `size` bytes, version `etag`).
    pub(crate) fn start(
        client: Arc<Client>,
        key: String,
        offset: u64,
        size: u64,
        etag: Option<String>,
    ) -> S3Download {
        let shared = Arc::new(ReadShared::default());
        if offset >= size {
            lock(&shared.state).eof = true;
            return S3Download { shared };
        }
        let theirs = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("wharf-s3-get".into())
            .spawn(move || fetch(&client, &key, offset, size, etag.as_deref(), &theirs));
        if let Err(e) = spawned {
            lock(&shared.state).error = Some(FsError::Io(format!("no thread for a download: {e}")));
        }
        S3Download { shared }
    }
}

/// The fetching thread: the body into the read-ahead, resuming (from where it was,
/// only while the object is the same version) when the response breaks.
fn fetch(client: &Client, key: &str, mut at: u64, size: u64, etag: Option<&str>, s: &ReadShared) {
    let mut resumes = 0;
    let mut buf = vec![0u8; CHUNK];
    'request: while at < size {
        let mut body = match client.get_from(key, at, etag) {
            Ok(body) => body,
            Err(e) => return fail(s, e),
        };
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) if at < size => {
                    if resumes == RESUMES {
                        return fail(
                            s,
                            FsError::Io("the object store ended the body early".into()),
                        );
                    }
                    resumes += 1;
                    continue 'request;
                }
                Ok(0) => break 'request,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if resumes == RESUMES {
                        return fail(s, FsError::Io(format!("object store read: {e}")));
                    }
                    tracing::debug!(key, at, error = %e, "resuming a download");
                    resumes += 1;
                    std::thread::sleep(Duration::from_millis(100));
                    continue 'request;
                }
            };
            at += n as u64;
            let mut st = lock(&s.state);
            st.queued += n;
            st.chunks.push_back(buf[..n].to_vec());
            wake(&mut st.waker);
            while st.queued >= READ_AHEAD && !st.closed {
                st = s.room.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.closed {
                return;
            }
        }
    }
    let mut st = lock(&s.state);
    st.eof = true;
    wake(&mut st.waker);
}

fn fail(s: &ReadShared, e: FsError) {
    let mut st = lock(&s.state);
    st.error = Some(e);
    wake(&mut st.waker);
}

impl Read for S3Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = lock(&self.shared.state);
        if let Some(front) = st.chunks.front_mut() {
            let n = buf.len().min(front.len());
            buf[..n].copy_from_slice(&front[..n]);
            if n == front.len() {
                st.chunks.pop_front();
            } else {
                front.drain(..n);
            }
            st.queued -= n;
            self.shared.room.notify_one();
            return Ok(n);
        }
        if let Some(e) = &st.error {
            return Err(io::Error::other(e.to_string()));
        }
        match st.eof {
            true => Ok(0),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Download for S3Download {
    fn set_waker(&mut self, waker: &Waker) {
        let mut st = lock(&self.shared.state);
        if !st.chunks.is_empty() || st.eof || st.error.is_some() {
            drop(st);
            waker.wake_by_ref();
        } else {
            st.waker = Some(waker.clone());
        }
    }
}

impl Drop for S3Download {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.room.notify_all();
    }
}

#[derive(Default)]
struct WriteState {
    /// A full part handed over (with its number), waiting for a sending thread.
    slot: Option<(usize, Vec<u8>)>,
    /// Parts being sent.
    sending: usize,
    /// Parts handed over so far: the next one is number `handed + 1`.
    handed: usize,
    /// Sending threads still running.
    alive: usize,
    upload_id: Option<String>,
    /// A sending thread is creating the multipart upload.
    creating: bool,
    etags: Vec<(usize, String)>,
    failed: Option<FsError>,
    /// The commit takes over: the threads stop once idle.
    closing: bool,
    /// Thrown away (or failed): the threads stop, the last one aborts the multipart
    /// upload.
    abandoned: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct WriteShared {
    state: Mutex<WriteState>,
    changed: Condvar,
}

/// An upload: a single PUT when it fits one part, a multipart upload otherwise; the
/// object appears only when the commit completes it.
pub struct S3Upload {
    client: Arc<Client>,
    key: String,
    /// The part filling up.
    current: Vec<u8>,
    shared: Arc<WriteShared>,
    senders: Vec<JoinHandle<()>>,
    /// Committed or discarded.
    finished: bool,
}

impl S3Upload {
    pub(crate) fn new(client: Arc<Client>, key: String) -> S3Upload {
        S3Upload {
            client,
            key,
            current: Vec::new(),
            shared: Arc::default(),
            senders: Vec::new(),
            finished: false,
        }
    }

    /// Hands the full part to a sending thread, if one is idle.
    fn hand_off(&mut self) -> io::Result<bool> {
        if self.senders.is_empty() {
            for _ in 0..self.client.parallel_parts {
                let (client, key, shared) =
                    (self.client.clone(), self.key.clone(), self.shared.clone());
                lock(&self.shared.state).alive += 1;
                let spawned = std::thread::Builder::new()
                    .name("wharf-s3-put".into())
                    .spawn(move || send_parts(&client, &key, &shared));
                match spawned {
                    Ok(h) => self.senders.push(h),
                    Err(e) if self.senders.is_empty() => {
                        lock(&self.shared.state).alive -= 1;
                        return Err(e);
                    }
                    Err(_) => lock(&self.shared.state).alive -= 1,
                }
            }
        }
        let mut st = lock(&self.shared.state);
        if st.slot.is_some() || st.sending >= self.senders.len() {
            return Ok(false);
        }
        st.handed += 1;
        st.slot = Some((st.handed, std::mem::take(&mut self.current)));
        self.shared.changed.notify_all();
        Ok(true)
    }

    /// Stops the sending threads once idle; the upload, its parts in order and the
    /// number of parts handed over.
    fn stop_senders(
        &mut self,
        abandon: bool,
    ) -> Result<(Option<String>, Vec<String>, usize), FsError> {
        {
            let mut st = lock(&self.shared.state);
            st.closing = true;
            st.abandoned |= abandon;
            self.shared.changed.notify_all();
        }
        for h in self.senders.drain(..) {
            let _ = h.join();
        }
        let mut st = lock(&self.shared.state);
        if let Some(e) = st.failed.take() {
            return Err(e);
        }
        let mut etags = std::mem::take(&mut st.etags);
        etags.sort_unstable_by_key(|(n, _)| *n);
        let etags = etags.into_iter().map(|(_, e)| e).collect();
        Ok((st.upload_id.take(), etags, st.handed))
    }
}

/// A sending thread: parts handed over, each as its numbered part of one multipart
/// upload (created by the thread that takes the first); `client.parallel_parts` of
/// them run. The last one to stop aborts the upload if it was thrown away or failed.
fn send_parts(client: &Client, key: &str, s: &WriteShared) {
    let mut st = lock(&s.state);
    loop {
        while st.slot.is_none() && !st.closing && !st.abandoned {
            st = s.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.abandoned {
            break;
        }
        let Some((number, part)) = st.slot.take() else {
            break; // closing, and nothing left
        };
        st.sending += 1;
        while st.upload_id.is_none() && st.creating && !st.abandoned {
            st = s.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let id = match st.upload_id.clone() {
            Some(id) => Ok(id),
            None if st.abandoned => Err(None),
            None => {
                st.creating = true;
                drop(st);
                let created = client.create_multipart(key);
                st = lock(&s.state);
                st.creating = false;
                if let Ok(id) = &created {
                    st.upload_id = Some(id.clone());
                }
                s.changed.notify_all();
                created.map_err(Some)
            }
        };
        let result = match id {
            Ok(id) => {
                drop(st);
                let sent = u16::try_from(number)
                    .ok()
                    .filter(|n| *n <= 10_000)
                    .ok_or_else(|| FsError::Io("more than 10,000 parts: raise part_size".into()))
                    .and_then(|n| client.upload_part(key, &id, n, &part));
                drop(part);
                st = lock(&s.state);
                sent.map_err(Some)
            }
            Err(e) => Err(e),
        };
        st.sending -= 1;
        match result {
            Ok(etag) => st.etags.push((number, etag)),
            Err(None) => {}
            Err(Some(e)) => {
                st.failed.get_or_insert(e);
                st.abandoned = true;
            }
        }
        wake(&mut st.waker);
        s.changed.notify_all();
    }
    st.alive -= 1;
    if st.alive == 0 && st.abandoned {
        if let Some(id) = st.upload_id.take() {
            drop(st);
            client.abort_multipart(key, &id);
            return;
        }
    }
    // A failure wakes the writer, whose next write reports it.
    wake(&mut st.waker);
}

impl Write for S3Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(e) = &lock(&self.shared.state).failed {
            return Err(io::Error::other(e.to_string()));
        }
        let part = self.client.part_size;
        if self.current.len() == part && !self.hand_off()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.current.capacity() == 0 {
            self.current.reserve_exact(part);
        }
        let n = buf.len().min(part - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Upload for S3Upload {
    fn commit(mut self: Box<Self>) -> Result<(), FsError> {
        self.finished = true;
        let (upload_id, mut etags, handed) = self.stop_senders(false)?;
        let Some(id) = upload_id else {
            return self.client.put(&self.key, &self.current);
        };
        let result = (|| {
            if !self.current.is_empty() || etags.is_empty() {
                let number = u16::try_from(handed + 1)
                    .ok()
                    .filter(|n| *n <= 10_000)
                    .ok_or_else(|| FsError::Io("more than 10,000 parts: raise part_size".into()))?;
                etags.push(
                    self.client
                        .upload_part(&self.key, &id, number, &self.current)?,
                );
            }
            self.client.complete_multipart(&self.key, &id, &etags)
        })();
        if result.is_err() {
            self.client.abort_multipart(&self.key, &id);
        }
        result
    }

    fn discard(mut self: Box<Self>) {
        self.finished = true;
        let _ = self.stop_senders(true);
    }

    fn set_waker(&mut self, waker: &Waker) {
        let mut st = lock(&self.shared.state);
        let room = st.slot.is_none() && st.sending < self.senders.len().max(1);
        if room || st.failed.is_some() {
            drop(st);
            waker.wake_by_ref();
        } else {
            st.waker = Some(waker.clone());
        }
    }
}

impl Drop for S3Upload {
    /// Neither committed nor discarded (a panic): the sending threads abort the
    /// multipart upload on their own; nothing here waits.
    fn drop(&mut self) {
        if !self.finished {
            let mut st = lock(&self.shared.state);
            st.abandoned = true;
            self.shared.changed.notify_all();
        }
    }
}
