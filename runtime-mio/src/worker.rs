//! The worker pool: runs storage, authentication and name-lookup requests off the event
//! loops.
//!
//! Every shard sends [`Job`]s down shared channels; a worker runs
//! [`wharf_core::backend::execute`] and returns the [`Done`] to the shard that asked,
//! waking it through its `mio::Waker`. Reverse lookups (`Request::ReverseLookup`) have
//! workers of their own, so a slow DNS server delays only the connections waiting for
//! their names, never another session's files or logins.

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::SystemTime;

use wharf_core::backend::{execute, OpenFile};
use wharf_core::{Authenticator, Completion, FileHandle, Request, RequestId, Resolver, Storage};

/// Where a job's answer goes: a shard, and the connection (slab key and generation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplyTo {
    pub shard: usize,
    pub key: usize,
    pub gen: u64,
}

/// A request for a worker. `req: None` is fire-and-forget (discarding a dead session's
/// upload): nobody waits for its answer.
pub(crate) struct Job {
    pub reply: ReplyTo,
    pub req: Option<RequestId>,
    pub request: Request,
    pub file: Option<OpenFile>,
}

/// A finished job, with the file an open produced (kept by the shard under its handle).
pub(crate) struct Done {
    pub key: usize,
    pub gen: u64,
    pub req: RequestId,
    pub completion: Completion,
    pub file: Option<(FileHandle, OpenFile)>,
}

pub(crate) struct WorkerPool {
    jobs: Jobs,
    threads: Vec<JoinHandle<()>>,
}

/// Where a shard sends its jobs: name lookups to their own workers, the rest to the
/// storage workers.
#[derive(Clone)]
pub(crate) struct Jobs {
    storage: JobSender,
    lookups: JobSender,
}

/// The jobs waiting for one group of workers. Each job wakes one waiting worker.
///
/// (The group used to share a `Mutex<Receiver<Job>>`: the worker holding the lock waited
/// in the channel and the others on the mutex, so every job woke one worker through the
/// channel and then the next through the mutex as the lock was handed on: ~12 futex
/// calls and as many context switches per FTPS session, on two cores shared with the
/// event loops.)
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// [`JobSender`]s alive: the workers leave once there are none and no job waits.
    senders: usize,
    /// Workers alive: with none, a send fails and hands the job back.
    workers: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // No code panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next job, waiting for one; `None` once every sender is gone and the queue is
    /// empty.
    fn next(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.senders == 0 {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A handle that queues jobs for one group of workers (like an mpsc `Sender`).
struct JobSender(Arc<Queue>);

impl JobSender {
    #[allow(clippy::result_large_err)]
    fn send(&self, job: Job) -> Result<(), mpsc::SendError<Job>> {
        let mut state = self.0.lock();
        if state.workers == 0 {
            return Err(mpsc::SendError(job));
        }
        state.jobs.push_back(job);
        drop(state);
        self.0.ready.notify_one();
        Ok(())
    }
}

impl Clone for JobSender {
    fn clone(&self) -> JobSender {
        self.0.lock().senders += 1;
        JobSender(self.0.clone())
    }
}

impl Drop for JobSender {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            self.0.ready.notify_all();
        }
    }
}

/// Counts a worker out of its queue when its thread ends, however it ends.
struct WorkerAlive(Arc<Queue>);

impl Drop for WorkerAlive {
    fn drop(&mut self) {
        self.0.lock().workers -= 1;
    }
}

impl Jobs {
    /// Like `Sender::send`: the job comes back when the pool is gone.
    #[allow(clippy::result_large_err)]
    pub(crate) fn send(&self, job: Job) -> Result<(), mpsc::SendError<Job>> {
        match job.request {
            Request::ReverseLookup { .. } => self.lookups.send(job),
            _ => self.storage.send(job),
        }
    }
}

struct Shared {
    storage: Arc<dyn Storage>,
    auth: Arc<dyn Authenticator>,
    resolver: Arc<dyn Resolver>,
    replies: Vec<Sender<Done>>,
    wakers: Vec<Arc<crate::shard::ShardWaker>>,
}

impl WorkerPool {
    /// `n` storage workers and `lookups` name-lookup workers (at least one each).
    pub(crate) fn new(
        (n, lookups): (usize, usize),
        (storage, auth, resolver): (Arc<dyn Storage>, Arc<dyn Authenticator>, Arc<dyn Resolver>),
        replies: Vec<Sender<Done>>,
        wakers: Vec<Arc<crate::shard::ShardWaker>>,
    ) -> io::Result<WorkerPool> {
        let shared = Arc::new(Shared {
            storage,
            auth,
            resolver,
            replies,
            wakers,
        });
        let mut threads = Vec::with_capacity(n + lookups);
        let mut spawn = |name: &str, count: usize| -> io::Result<JobSender> {
            let queue = Arc::new(Queue {
                state: Mutex::new(QueueState {
                    jobs: VecDeque::new(),
                    senders: 1,
                    workers: 0,
                }),
                ready: Condvar::new(),
            });
            let sender = JobSender(queue.clone());
            for i in 0..count.max(1) {
                queue.lock().workers += 1;
                let alive = WorkerAlive(queue.clone());
                let shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("wharf-{name}-{i}"))
                    .spawn(move || {
                        work(&alive.0, &shared);
                        drop(alive);
                    });
                // A thread that did not start dropped its `WorkerAlive` with the closure.
                threads.push(spawned?);
            }
            Ok(sender)
        };
        let jobs = Jobs {
            storage: spawn("worker", n)?,
            lookups: spawn("lookup", lookups)?,
        };
        Ok(WorkerPool { jobs, threads })
    }

    pub(crate) fn sender(&self) -> Jobs {
        self.jobs.clone()
    }

    /// Waits for the workers; they exit once every sender (the shards') is gone.
    pub(crate) fn join(self) {
        drop(self.jobs);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn work(queue: &Queue, shared: &Shared) {
    while let Some(job) = queue.next() {
        let handle = match &job.request {
            Request::OpenRead { file, .. } | Request::OpenWrite { file, .. } => Some(*file),
            _ => None,
        };
        let (completion, file) = execute(
            &*shared.storage,
            &*shared.auth,
            &*shared.resolver,
            job.request,
            job.file,
            SystemTime::now(),
        );
        let Some(req) = job.req else { continue };
        let done = Done {
            key: job.reply.key,
            gen: job.reply.gen,
            req,
            completion,
            file: handle.zip(file),
        };
        let shard = job.reply.shard;
        // A shard that has exited no longer listens; its open file is dropped here.
        if shared.replies[shard].send(done).is_ok() {
            let _ = shared.wakers[shard].wake();
        }
    }
}
