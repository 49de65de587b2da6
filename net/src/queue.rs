//! A job queue for a group of worker threads, as an event-loop runtime keeps for the
//! storage, login and name-lookup requests it runs off its loops.
//!
//! Each job wakes one waiting worker: the one that became idle last (each waits on its
//! own `Condvar`), so back-to-back requests (a session's listings, one after another)
//! run on the same warm thread, with its caches and its malloc arena, instead of going
//! round every worker in turn.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The jobs waiting for one group of workers. Each job wakes one waiting worker: the one
/// that became idle last (each waits on its own `Condvar`), so a warm thread takes the
/// next job rather than the one that has waited longest.
///
/// (The group used to share a `Mutex<Receiver<Job>>`: the worker holding the lock waited
/// in the channel and the others on the mutex, so every job woke one worker through the
/// channel and then the next through the mutex as the lock was handed on: ~12 futex
/// calls and as many context switches per FTPS session, on two cores shared with the
/// event loops. It also handed jobs to the workers in turn: on a fresh server each of
/// the first LIST 10k ran on another cold thread and page-faulted its arena in.)
pub struct Queue<T> {
    state: Mutex<QueueState<T>>,
    /// One per worker, each used with `state`.
    wake: Vec<Condvar>,
}

struct QueueState<T> {
    jobs: VecDeque<T>,
    /// Waiting workers, the most recently idle last.
    idle: Vec<usize>,
    /// [`JobSender`]s alive: the workers leave once there are none and no job waits.
    senders: usize,
    /// Workers alive: with none, a send fails and hands the job back.
    workers: usize,
}

impl<T> Queue<T> {
    /// A queue for `workers` workers (numbered from 0), with one sender.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(workers: usize) -> (Arc<Queue<T>>, JobSender<T>) {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                idle: Vec::with_capacity(workers),
                senders: 1,
                workers: 0,
            }),
            wake: (0..workers).map(|_| Condvar::new()).collect(),
        });
        let sender = JobSender(queue.clone());
        (queue, sender)
    }

    fn lock(&self) -> MutexGuard<'_, QueueState<T>> {
        // No code panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Worker `me`'s next job, waiting for one; `None` once every sender is gone and
    /// the queue is empty.
    pub fn next(&self, me: usize) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                // Woken otherwise than by a send for it: no longer idle.
                state.idle.retain(|&w| w != me);
                return Some(job);
            }
            if state.senders == 0 {
                return None;
            }
            if !state.idle.contains(&me) {
                state.idle.push(me);
            }
            state = self.wake[me].wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A handle that queues jobs for one group of workers (like an mpsc `Sender`).
pub struct JobSender<T>(Arc<Queue<T>>);

impl<T> JobSender<T> {
    #[allow(clippy::result_large_err)]
    pub fn send(&self, job: T) -> Result<(), mpsc::SendError<T>> {
        let mut state = self.0.lock();
        if state.workers == 0 {
            return Err(mpsc::SendError(job));
        }
        state.jobs.push_back(job);
        let idle = state.idle.pop();
        drop(state);
        if let Some(w) = idle {
            self.0.wake[w].notify_one();
        }
        Ok(())
    }
}

impl<T> Clone for JobSender<T> {
    fn clone(&self) -> JobSender<T> {
        self.0.lock().senders += 1;
        JobSender(self.0.clone())
    }
}

impl<T> Drop for JobSender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            for w in &self.0.wake {
                w.notify_all();
            }
        }
    }
}

/// A worker's place in its queue: counted in when made ([`Queue::enlist`]), counted out
/// when dropped, however its thread ends.
pub struct WorkerAlive<T>(Arc<Queue<T>>);

impl<T> WorkerAlive<T> {
    /// The queue this worker takes jobs from.
    pub fn queue(&self) -> &Queue<T> {
        &self.0
    }
}

impl<T> Queue<T> {
    /// Counts a worker in (before its thread starts).
    pub fn enlist(self: &Arc<Self>) -> WorkerAlive<T> {
        self.lock().workers += 1;
        WorkerAlive(self.clone())
    }
}

impl<T> Drop for WorkerAlive<T> {
    fn drop(&mut self) {
        self.0.lock().workers -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    /// What the test workers report: (worker, number).
    type Ran = mpsc::Receiver<(usize, u32)>;

    /// Starts `n` workers on a queue of numbers; each reports (worker, number).
    fn workers(n: usize) -> (JobSender<u32>, Ran, Vec<std::thread::JoinHandle<()>>) {
        let (queue, sender) = Queue::new(n);
        let (tx, rx) = channel();
        let threads = (0..n)
            .map(|me| {
                let alive = queue.enlist();
                let tx = tx.clone();
                std::thread::spawn(move || {
                    while let Some(job) = alive.0.next(me) {
                        tx.send((me, job)).unwrap();
                    }
                })
            })
            .collect();
        (sender, rx, threads)
    }

    #[test]
    fn back_to_back_jobs_go_to_the_same_warm_worker() {
        let (tx, rx, threads) = workers(4);
        let all_idle = || {
            while tx.0.lock().idle.len() < 4 {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let mut ran_on = Vec::new();
        for i in 0..20 {
            // Every worker waits (the last one back from its job on top).
            all_idle();
            tx.send(i).unwrap();
            let (worker, job) = rx.recv().unwrap();
            assert_eq!(job, i);
            ran_on.push(worker);
        }
        assert!(ran_on.windows(2).all(|w| w[0] == w[1]), "{ran_on:?}");
        drop(tx);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn every_job_runs_once_and_workers_exit_after_the_last_sender() {
        let (tx, rx, threads) = workers(3);
        let tx2 = tx.clone();
        let senders: Vec<_> = [tx, tx2]
            .into_iter()
            .enumerate()
            .map(|(k, tx)| {
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        tx.send(k as u32 * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        // Both senders are gone: the workers drain the queue, then exit.
        for t in threads {
            t.join().unwrap();
        }
        let mut got: Vec<u32> = rx.try_iter().map(|(_, job)| job).collect();
        got.sort_unstable();
        assert_eq!(got, (0..2000).collect::<Vec<_>>());
    }

    #[test]
    fn a_send_with_no_worker_left_hands_the_job_back() {
        let (_queue, sender) = Queue::<u32>::new(1);
        assert_eq!(sender.send(7), Err(mpsc::SendError(7)));
    }
}
