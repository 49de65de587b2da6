//! One event loop: its listeners, control connections, timers and the drain rule.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use wharf_core::backend::OpenFile;
use wharf_core::ports::PortPool;
use wharf_core::{Action, FileHandle, Input, Request, Server, Session};
use wharf_net::{ControlRead, Files, PumpLimits};

use crate::data::DataSock;
use crate::worker::{Done, Job, Jobs, ReplyTo};
use crate::MioConfig;
use wharf_net::timers::{TimerHeap, TimerSlot};

const WAKER: Token = Token(usize::MAX);

/// Wakes a shard's poll for completions and messages. A wake-up still pending is not
/// repeated: a burst of completions costs one eventfd write and one poll return, not one
/// each.
pub(crate) struct ShardWaker {
    waker: Waker,
    /// Set by the first wake after the shard last looked; cleared (by the shard) before
    /// it drains its channels. Both are read-modify-writes, so a wake that finds it set
    /// is ordered before the clear, and its message before the drain.
    pending: AtomicBool,
}

/// Transfers whose file side (object storage working in the background) can go on
/// again, by data key and generation: filled by [`FileWake`] from any thread, drained
/// by the shard when it wakes.
pub(crate) type FileReady = Arc<std::sync::Mutex<Vec<(usize, u64)>>>;

/// The `std::task::Waker` a transfer's open file gets when its pump stopped with
/// `Run::File`: waking it queues the transfer and wakes the shard.
pub(crate) struct FileWake {
    pub ready: FileReady,
    pub waker: Arc<ShardWaker>,
    pub dkey: usize,
    pub gen: u64,
}

impl std::task::Wake for FileWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.dkey, self.gen));
        let _ = self.waker.wake();
    }
}

impl ShardWaker {
    /// Call after queueing the message or completion.
    pub(crate) fn wake(&self) -> io::Result<()> {
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.waker
            .wake()
            .inspect_err(|_| self.pending.store(false, Ordering::Release))
    }
}
/// Connections accepted per listener per wake-up before yielding.
pub(crate) const ACCEPT_BUDGET: usize = 64;
/// How long to wait before accepting again after running out of descriptors.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a closing connection may take to write its last replies.
const CLOSE_LINGER: Duration = Duration::from_secs(10);
/// Control-channel reads go through one buffer per shard.
const SCRATCH: usize = 16 * 1024;

/// Messages from the [`crate::RunningServer`] handle.
pub(crate) enum ShardMsg {
    Shutdown {
        grace: Duration,
    },
    /// A health check ([`crate::Health`]): answered from the event loop.
    Ping(std::sync::mpsc::Sender<()>),
    /// An administrator ends this session (the live sessions board).
    Disconnect(wharf_core::SessionId),
}

/// Work left over from a wake-up whose budget ran out (edge-triggered readiness will not
/// report it again).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ready {
    Control(usize, u64),
    Data(usize, u64),
    Accept(usize),
}

/// Token layout: control connection `k` is `2k`, data socket `k` is `2k + 1`, listeners
/// count down from below the waker.
pub(crate) fn control_token(key: usize) -> Token {
    Token(key * 2)
}
pub(crate) fn data_token(key: usize) -> Token {
    Token(key * 2 + 1)
}
fn listener_token(i: usize) -> Token {
    Token(usize::MAX - 1 - i)
}

/// One control connection. Kept small: an idle session costs this plus its `Session`.
pub(crate) struct Conn {
    pub session: Session,
    pub stream: TcpStream,
    pub gen: u64,
    pub timer: TimerSlot,
    /// Read readiness not yet consumed down to `WouldBlock`.
    pub readable: bool,
    /// `Action::Close` arrived: close once the output is written.
    pub closing: bool,
    /// The socket failed: pending output is dropped, the session was told `ControlEof`.
    pub broken: bool,
    /// In the ready queue already.
    pub queued: bool,
    /// Data sockets (listeners and connections) of this session, as data-slab keys.
    pub data: Vec<usize>,
    /// Files opened for this session and not in a running transfer.
    pub files: Files,
}

pub(crate) struct Shard {
    pub index: usize,
    pub poll: Poll,
    pub(crate) waker: Arc<ShardWaker>,
    /// Transfers whose file woke them ([`FileWake`]).
    pub file_ready: FileReady,
    pub server: Server,
    pub listeners: Vec<Option<TcpListener>>,
    pub conns: Slab<Conn>,
    pub data: Slab<DataSock>,
    timers: TimerHeap,
    /// The transfer pumps' timers (stall, minimum rate, pacing), by data key.
    pub data_timers: TimerHeap,
    pub ready: VecDeque<Ready>,
    scratch: Vec<u8>,
    next_gen: u64,
    msgs: Receiver<ShardMsg>,
    done: Receiver<Done>,
    jobs: Option<Jobs>,
    /// The passive port pool, shared with every other shard.
    pub ports: Arc<PortPool>,
    pub limits: PumpLimits,
    control_reads_budget: usize,
    max_events: usize,
    shutdown_at: Option<Instant>,
    pub accept_retry: Option<Instant>,
    /// `accept` last failed for lack of descriptors (logged once per episode).
    pub exhausted: bool,
    /// A descriptor kept open so that, out of descriptors, the backlog can still be
    /// accepted and closed.
    pub spare: wharf_net::Spare,
    /// Where log records go.
    pub log: Option<Arc<dyn wharf_core::log::LogSink>>,
    /// This shard's own message channel, for the sessions board's disconnect.
    pub msg_tx: Option<std::sync::mpsc::Sender<ShardMsg>>,
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        cfg: &MioConfig,
        server: Server,
        listeners: Vec<(usize, TcpListener)>,
        msgs: Receiver<ShardMsg>,
        done: Receiver<Done>,
        ports: Arc<PortPool>,
    ) -> io::Result<Shard> {
        let poll = Poll::new()?;
        let waker = Arc::new(ShardWaker {
            waker: Waker::new(poll.registry(), WAKER)?,
            pending: AtomicBool::new(false),
        });
        let mut ls = Vec::with_capacity(listeners.len());
        for (i, (_, mut l)) in listeners.into_iter().enumerate() {
            poll.registry()
                .register(&mut l, listener_token(i), Interest::READABLE)?;
            ls.push(Some(l));
        }
        Ok(Shard {
            index,
            poll,
            waker,
            file_ready: FileReady::default(),
            server,
            listeners: ls,
            conns: Slab::new(),
            data: Slab::new(),
            timers: TimerHeap::default(),
            data_timers: TimerHeap::default(),
            ready: VecDeque::new(),
            scratch: vec![0; SCRATCH],
            next_gen: 0,
            msgs,
            done,
            jobs: None,
            ports,
            limits: cfg.driver.pump_limits(),
            control_reads_budget: cfg.driver.control_reads_budget.max(1),
            max_events: cfg.max_events.max(16),
            shutdown_at: None,
            accept_retry: None,
            exhausted: false,
            spare: wharf_net::Spare::default(),
            log: cfg.driver.log.clone(),
            msg_tx: None,
        })
    }

    pub(crate) fn waker(&self) -> Arc<ShardWaker> {
        self.waker.clone()
    }

    pub(crate) fn set_jobs(&mut self, jobs: Jobs) {
        self.jobs = Some(jobs);
    }

    pub(crate) fn next_gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    /// The event loop; returns after shutdown, once every session is gone.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(self.max_events);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events {
                self.dispatch(ev);
            }
            self.run_ready();
            self.fire_timers();
            if self.finished() {
                break;
            }
        }
        self.close_all();
        tracing::debug!(shard = self.index, "shard stopped");
        Ok(())
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.next_deadline(),
            self.data_timers.next_deadline(),
            self.accept_retry,
            self.shutdown_at,
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    fn dispatch(&mut self, ev: &mio::event::Event) {
        let t = ev.token();
        if t == WAKER {
            self.on_wake();
        } else if t.0 >= usize::MAX - 1 - self.listeners.len() {
            self.on_accept(usize::MAX - 1 - t.0);
        } else if t.0.is_multiple_of(2) {
            let key = t.0 / 2;
            self.guard(key, |s| {
                if ev.is_writable() {
                    s.drive_if_live(key);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    if let Some(c) = s.conns.get_mut(key) {
                        c.readable = true;
                        s.on_control_readable(key);
                    }
                }
            });
        } else {
            let dkey = t.0 / 2;
            if let Some(owner) = self.data.get(dkey).map(|d| d.owner()) {
                self.guard(owner, |s| s.on_data_event(dkey, ev));
            }
        }
    }

    /// Runs `f`, work of the session at `key`; a panic in it (in the core, the pump, or
    /// a file read on this thread) ends that session alone: it is told 421 and everything
    /// it held is released, while the shard and every other session go on.
    pub(crate) fn guard(&mut self, key: usize, f: impl FnOnce(&mut Shard)) {
        let gen = self.conns.get(key).map(|c| c.gen);
        if let Err(why) = wharf_net::catch(|| f(self)) {
            self.kill(key, gen, &why);
        }
    }

    /// Ends a session that failed inside the server.
    fn kill(&mut self, key: usize, gen: Option<u64>, why: &str) {
        let Some(c) = self.conns.get(key).filter(|c| Some(c.gen) == gen) else {
            return;
        };
        let (id, peer) = (c.session.id(), c.stream.peer_addr().ok());
        tracing::error!(shard = self.index, session = %id, ?peer, "session failed: {why}; closing it");
        let _ = (&c.stream).write(wharf_net::INTERNAL_ERROR);
        self.close_conn(key);
    }

    fn run_ready(&mut self) {
        let mut batch = std::mem::take(&mut self.ready);
        for r in batch.drain(..) {
            match r {
                Ready::Control(key, gen) => {
                    if let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == gen) {
                        c.queued = false;
                        self.guard(key, |s| s.on_control_readable(key));
                    }
                }
                Ready::Data(dkey, gen) => {
                    if let Some(owner) = self.data.get(dkey).map(|d| d.owner()) {
                        self.guard(owner, |s| s.on_data_ready(dkey, gen));
                    }
                }
                Ready::Accept(i) => self.on_accept(i),
            }
        }
        // Keep the allocation when nothing was queued meanwhile.
        if self.ready.is_empty() {
            self.ready = batch;
        }
    }

    fn on_wake(&mut self) {
        // Before draining: a completion queued from now on wakes the loop again.
        self.waker.pending.swap(false, Ordering::AcqRel);
        while let Ok(msg) = self.msgs.try_recv() {
            match msg {
                ShardMsg::Shutdown { grace } => self.begin_shutdown(grace),
                ShardMsg::Ping(reply) => {
                    let _ = reply.send(());
                }
                ShardMsg::Disconnect(id) => self.disconnect(id),
            }
        }
        while let Ok(done) = self.done.try_recv() {
            self.on_done(done);
        }
        let woken = std::mem::take(&mut *self.file_ready.lock().unwrap_or_else(|e| e.into_inner()));
        for (dkey, gen) in woken {
            self.queue_file_ready(dkey, gen);
        }
    }

    fn on_done(&mut self, d: Done) {
        match self.conns.get_mut(d.key).filter(|c| c.gen == d.gen) {
            Some(c) => {
                if let Some((h, f)) = d.file {
                    c.files.put(h, f);
                }
                let completion = match d.completion {
                    Ok(completion) => completion,
                    Err(why) => return self.kill(d.key, Some(d.gen), &why),
                };
                let req = d.req;
                self.guard(d.key, |s| {
                    let input = Input::Completed { req, completion };
                    s.conns[d.key].session.handle_input(Instant::now(), input);
                    s.drive(d.key);
                });
            }
            None => {
                if let Some((h, f)) = d.file {
                    self.dispose(h, f);
                }
            }
        }
    }

    /// Releases a file nobody will close: uploads are discarded on a worker (it touches
    /// the disk), downloads are simply dropped.
    pub(crate) fn dispose(&mut self, handle: FileHandle, file: OpenFile) {
        if let OpenFile::Write(_) = file {
            let job = Job {
                reply: ReplyTo {
                    shard: self.index,
                    key: usize::MAX,
                    gen: 0,
                },
                req: None,
                request: Request::CloseFile {
                    file: handle,
                    commit: false,
                },
                file: Some(file),
            };
            let Some(jobs) = &self.jobs else { return };
            if let Err(e) = jobs.send(job) {
                // The pool is gone (shutting down): discard here.
                if let Some(OpenFile::Write(up)) = e.0.file {
                    up.discard();
                }
            }
        }
    }

    /// Reads control bytes while the session wants them, within the read budget.
    fn on_control_readable(&mut self, key: usize) {
        for _ in 0..self.control_reads_budget {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if !c.readable || c.closing || c.broken || !c.session.wants_read() {
                return;
            }
            let now = Instant::now();
            match wharf_net::read_control(&mut c.session, &c.stream, &mut self.scratch, now) {
                ControlRead::Bytes => {}
                ControlRead::Closed => c.readable = false,
                ControlRead::Broken => (c.readable, c.broken) = (false, true),
                ControlRead::Retry => continue,
                ControlRead::WouldBlock => {
                    c.readable = false;
                    return;
                }
            }
            self.drive(key);
        }
        self.queue_control(key);
    }

    fn queue_control(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if c.readable && !c.queued && !c.closing && c.session.wants_read() {
                c.queued = true;
                self.ready.push_back(Ready::Control(key, c.gen));
            }
        }
    }

    fn drive_if_live(&mut self, key: usize) {
        if self.conns.contains(key) {
            self.drive(key);
        }
    }

    /// The drain rule: write what `poll_transmit` holds, perform every action (feeding
    /// back the inputs they produce at once), then re-arm the timer; close the connection
    /// when the session is done and its output is out.
    pub(crate) fn drive(&mut self, key: usize) {
        let mut inputs: VecDeque<Input<'static>> = VecDeque::new();
        loop {
            self.flush(key);
            while let Some(action) = self.conns[key].session.poll_action() {
                self.perform(key, action, &mut inputs);
            }
            let c = &mut self.conns[key];
            match inputs.pop_front() {
                Some(input) => c.session.handle_input(Instant::now(), input),
                None => break,
            }
        }
        let c = &mut self.conns[key];
        let done = c.closing || c.session.is_closed();
        if done && (c.broken || c.session.poll_transmit().is_none()) {
            self.close_conn(key);
            return;
        }
        // A closing session has no timers of its own; a peer that never reads its last
        // reply must not hold the connection forever.
        let deadline = match done {
            true => Some(Instant::now() + CLOSE_LINGER),
            false => c.session.poll_timeout(),
        };
        self.timers.arm(&mut c.timer, key, c.gen, deadline);
        self.queue_control(key);
    }

    /// Writes pending control output until it is all out or the socket blocks.
    fn flush(&mut self, key: usize) {
        let c = &mut self.conns[key];
        wharf_net::flush_control(&mut c.session, &c.stream, &mut c.broken);
        c.readable &= !c.broken;
    }

    /// Carries out one action; the inputs it produced at once go to `inputs`.
    fn perform(&mut self, key: usize, action: Action, inputs: &mut VecDeque<Input<'static>>) {
        match action {
            Action::Request { req, request } => self.submit(key, req, request),
            Action::ListenData { conn, ip, ports } => {
                inputs.push_back(self.listen_data(key, conn, ip, ports))
            }
            Action::RefuseData { conn } => self.refuse_data(key, conn),
            Action::ReadProxyHeader { conn } => self.read_proxy_header(key, conn),
            Action::StopListening { conn } => self.stop_listening(key, conn),
            Action::ConnectData {
                conn,
                local_ip,
                local_port,
                target,
            } => inputs.extend(self.connect_data(key, conn, (local_ip, local_port), target)),
            Action::StartTransfer {
                conn, file, pump, ..
            } => inputs.extend(self.start_transfer(key, conn, file, pump)),
            Action::AbortTransfer { xfer } => inputs.extend(self.abort_transfer(key, xfer)),
            Action::CloseData { conn } => self.close_data_by_id(key, conn),
            Action::PrepareTransfer { conn, pump } => self.prepare_transfer(key, conn, pump),
            Action::Close => self.conns[key].closing = true,
            Action::Log(record) => {
                if let Some(sink) = &self.log {
                    sink.log(record);
                }
            }
        }
    }

    fn submit(&mut self, key: usize, req: wharf_core::RequestId, request: Request) {
        let c = &mut self.conns[key];
        let file = match &request {
            Request::CloseFile { file, .. } => c.files.take(*file),
            _ => None,
        };
        let job = Job {
            reply: ReplyTo {
                shard: self.index,
                key,
                gen: c.gen,
            },
            req: Some(req),
            request,
            file,
        };
        if let Some(jobs) = &self.jobs {
            if jobs.send(job).is_err() {
                tracing::error!("worker pool is gone; request dropped");
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        if self.accept_retry.is_some_and(|t| t <= now) {
            self.accept_retry = None;
            for i in 0..self.listeners.len() {
                self.on_accept(i);
            }
        }
        while let Some((dkey, gen, entry)) = self.data_timers.pop_due(now) {
            if let Some(owner) = self.data.get(dkey).map(|d| d.owner()) {
                self.guard(owner, |s| s.on_data_timer(dkey, gen, entry, now));
            }
        }
        while let Some((key, gen, entry)) = self.timers.pop_due(now) {
            let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
                continue;
            };
            if self.timers.fire(&mut c.timer, key, gen, entry, now) {
                if c.closing || c.session.is_closed() {
                    self.close_conn(key);
                    continue;
                }
                self.guard(key, |s| {
                    s.conns[key].session.handle_timeout(now);
                    s.drive(key);
                });
            }
        }
    }

    /// Closes a control connection and releases everything its session still holds.
    pub(crate) fn close_conn(&mut self, key: usize) {
        let mut c = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut c.stream);
        for dkey in std::mem::take(&mut c.data) {
            if let Some((h, f)) = self.remove_data(dkey) {
                c.files.put(h, f);
            }
        }
        for (h, f) in c.files.drain() {
            self.dispose(h, f);
        }
        self.server.session_closed(c.session.id());
    }

    /// Ends session `id`, if it is still here.
    fn disconnect(&mut self, id: wharf_core::SessionId) {
        let Some(key) = self
            .conns
            .iter()
            .find(|(_, c)| c.session.id() == id)
            .map(|(k, _)| k)
        else {
            return;
        };
        self.guard(key, |s| {
            if let Some(c) = s.conns.get_mut(key) {
                c.session.handle_input(Instant::now(), Input::Disconnect);
                s.drive(key);
            }
        });
    }

    fn begin_shutdown(&mut self, grace: Duration) {
        if self.shutdown_at.is_some() {
            return;
        }
        let now = Instant::now();
        self.shutdown_at = Some(now + grace);
        for l in self.listeners.iter_mut() {
            if let Some(mut l) = l.take() {
                let _ = self.poll.registry().deregister(&mut l);
            }
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.guard(key, |s| {
                if let Some(c) = s.conns.get_mut(key) {
                    c.session.handle_input(now, Input::Shutdown);
                    s.drive(key);
                }
            });
        }
    }

    fn finished(&self) -> bool {
        match self.shutdown_at {
            Some(t) => self.conns.is_empty() || Instant::now() >= t,
            None => false,
        }
    }

    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_conn(key);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The per-session budget: the bookkeeping around a `Session` stays small (the
    /// session itself is budgeted by the core).
    #[test]
    fn idle_connection_bookkeeping_is_small() {
        let conn = std::mem::size_of::<super::Conn>();
        let session = std::mem::size_of::<wharf_core::Session>();
        assert!(conn - session <= 160, "Conn adds {} bytes", conn - session);
        assert!(conn <= 2048, "Conn is {conn} bytes");
    }
}
