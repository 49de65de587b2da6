//! The worker pool: runs storage, authentication and name-lookup requests off the event
//! loops.
//!
//! Every shard sends [`Job`]s down shared channels; a worker runs
//! [`wharf_core::backend::execute`] and returns the [`Done`] to the shard that asked,
//! waking it through its `mio::Waker`. Reverse lookups (`Request::ReverseLookup`) have
//! workers of their own, so a slow DNS server delays only the connections waiting for
//! their names, never another session's files or logins.
//!
//! An idle worker is woken most-recently-idle first (`wharf_net::queue`).

use std::io;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use wharf_core::backend::{execute, OpenFile};
use wharf_core::{Authenticator, Completion, FileHandle, Request, RequestId, Resolver, Storage};
use wharf_net::queue::{JobSender, Queue};

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
    /// `Err`: the request panicked (in storage or the authenticator); the session ends.
    pub completion: Result<Completion, String>,
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
    storage: JobSender<Job>,
    lookups: JobSender<Job>,
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
        let mut spawn = |name: &str, count: usize| -> io::Result<JobSender<Job>> {
            let count = count.max(1);
            let (queue, sender) = Queue::new(count);
            for i in 0..count {
                let alive = queue.enlist();
                let shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("wharf-{name}-{i}"))
                    .spawn(move || {
                        work(alive.queue(), i, &shared);
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

fn work(queue: &Queue<Job>, me: usize, shared: &Shared) {
    while let Some(job) = queue.next(me) {
        let handle = match &job.request {
            Request::OpenRead { file, .. } | Request::OpenWrite { file, .. } => Some(*file),
            _ => None,
        };
        let (store, auth, resolver) = (&*shared.storage, &*shared.auth, &*shared.resolver);
        let (request, file, now) = (job.request, job.file, SystemTime::now());
        // A panic in a storage or an authenticator ends the session that asked, not the
        // worker (which would leave the pool short for good).
        let ran = wharf_net::catch(|| execute(store, auth, resolver, request, file, now));
        let (completion, file) = match ran {
            Ok((c, f)) => (Ok(c), f),
            Err(why) => (Err(why), None),
        };
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
