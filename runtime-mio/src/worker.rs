//! The worker pool: runs storage and authentication requests off the event loops.
//!
//! Every shard sends [`Job`]s down one shared channel; a worker runs
//! [`wharf_core::backend::execute`] and returns the [`Done`] to the shard that asked,
//! waking it through its `mio::Waker`.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use wharf_core::backend::{execute, OpenFile};
use wharf_core::{Authenticator, Completion, FileHandle, Request, RequestId, Storage};

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
    jobs: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    storage: Arc<dyn Storage>,
    auth: Arc<dyn Authenticator>,
    replies: Vec<Sender<Done>>,
    wakers: Vec<Arc<mio::Waker>>,
}

impl WorkerPool {
    pub(crate) fn new(
        n: usize,
        storage: Arc<dyn Storage>,
        auth: Arc<dyn Authenticator>,
        replies: Vec<Sender<Done>>,
        wakers: Vec<Arc<mio::Waker>>,
    ) -> io::Result<WorkerPool> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            storage,
            auth,
            replies,
            wakers,
        });
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            let shared = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("wharf-worker-{i}"))
                .spawn(move || work(&rx, &shared))?;
            threads.push(t);
        }
        Ok(WorkerPool { jobs, threads })
    }

    pub(crate) fn sender(&self) -> Sender<Job> {
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

fn work(rx: &Mutex<Receiver<Job>>, shared: &Shared) {
    loop {
        // The lock is held only while waiting for one job, never while running it.
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let handle = match &job.request {
            Request::OpenRead { file, .. } | Request::OpenWrite { file, .. } => Some(*file),
            _ => None,
        };
        let (completion, file) = execute(
            &*shared.storage,
            &*shared.auth,
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
