//! One control connection as one task: the drain rule, the control socket, the timer,
//! and the events that the session's helper tasks send back.
//!
//! The task owns the [`Session`] and everything the session holds (its data connections
//! and open files). Work that waits runs elsewhere and reports through the session's
//! event channel: storage and login requests on the blocking pool, passive accepts,
//! active connects and transfers as tasks of their own. The task itself waits on one
//! thing at a time out of: control readable, control writable (only while replies are
//! pending), an event, its timer, and the server's shutdown.

use std::cell::RefCell;
use std::future::Future;

use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Instant, SystemTime};

use smol::channel::{Receiver, Sender};
use smol::future::{self, FutureExt};
use smol::stream::Stream;
use smol::{Async, Timer};
use std::panic::AssertUnwindSafe;
use wharf_core::backend::{execute, OpenFile};
use wharf_core::{
    Action, Completion, DataConnId, DataError, FileHandle, Input, Request, RequestId, Server,
    Session, TransferId,
};
use wharf_net::{ControlRead, Files};

use crate::data::{DataEntry, Listener};
use crate::{lock, Ctx, CLOSE_LINGER};

/// Control-channel reads go through one buffer per executor thread.
const SCRATCH: usize = 16 * 1024;

/// Room in a session's event channel. Helper tasks wait when it is full; the session
/// drains it whenever it waits, so they never wait long.
const EVENTS: usize = 16;

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// What a session's helper tasks report.
pub(crate) enum Event {
    /// A request ran; an open carries its file.
    Completed {
        req: RequestId,
        completion: Completion,
        file: Option<(FileHandle, OpenFile)>,
    },
    /// A passive listener accepted a connection; the listener comes back with it.
    Accepted {
        conn: DataConnId,
        peer: SocketAddr,
        stream: Async<TcpStream>,
        listener: Listener,
    },
    /// A balancer's PROXY protocol header was read off an accepted connection (or not:
    /// `client` is `None`); the listener comes back with it.
    Proxied {
        conn: DataConnId,
        client: Option<SocketAddr>,
        peer: SocketAddr,
        stream: Async<TcpStream>,
        listener: Listener,
    },
    /// An active connect succeeded.
    Connected {
        conn: DataConnId,
        stream: Async<TcpStream>,
    },
    /// A connect failed, or an idle data connection broke.
    Failed { conn: DataConnId, error: DataError },
    /// Work of this session panicked elsewhere (a request, a transfer): it ends.
    Crashed(String),
    /// A transfer's pump reported progress, or its end (`TransferDone`, after the data
    /// connection closed: then the file comes back).
    Transfer {
        xfer: TransferId,
        input: Input<'static>,
        file: Option<(FileHandle, OpenFile)>,
    },
    /// An administrator ends the session (the live sessions board).
    Disconnect,
}

/// The sending side of a session's events (boxed: an idle channel costs a few words).
pub(crate) type Events = Sender<Box<Event>>;

/// Sends an event from a helper task; when the session is gone, gives it back.
pub(crate) async fn report(events: &Events, ev: Event) -> Option<Event> {
    events
        .send(Box::new(ev))
        .await
        .err()
        .map(|e| *e.into_inner())
}

/// Releases a file nobody will close: an upload is discarded on the blocking pool (it
/// may touch the disk), a download is dropped.
pub(crate) async fn dispose(file: OpenFile) {
    if let OpenFile::Write(up) = file {
        smol::unblock(move || up.discard()).await;
    }
}

/// Files carried by an event that will not be delivered.
fn file_of(ev: Event) -> Option<OpenFile> {
    match ev {
        Event::Completed { file, .. } | Event::Transfer { file, .. } => file.map(|(_, f)| f),
        _ => None,
    }
}

/// What was ready when a session woke.
#[derive(Default)]
struct Woke {
    readable: bool,
    writable: bool,
    event: Option<Box<Event>>,
    timer: bool,
    shutdown: bool,
}

impl Woke {
    fn any(&self) -> bool {
        self.readable || self.writable || self.event.is_some() || self.timer || self.shutdown
    }
}

pub(crate) struct Driver {
    pub ctx: Arc<Ctx>,
    pub session: Session,
    stream: Async<TcpStream>,
    pub events: Events,
    /// Pinned (boxed) so that `wait` can poll it as a stream.
    rx: Pin<Box<Receiver<Box<Event>>>>,
    /// This session's handle on the server's shutdown signal.
    stop: Pin<Box<Receiver<()>>>,
    timer: Timer,
    /// The deadline `timer` is set to (`None`: not set, or already fired).
    timer_at: Option<Instant>,
    /// The socket may have bytes: read before waiting for readiness again.
    readable: bool,
    /// The peer closed its side; nothing more to read.
    read_closed: bool,
    /// `Action::Close` arrived: close once the output is written.
    closing: bool,
    /// When a closing session gives up on a peer that does not read its last replies.
    linger_until: Option<Instant>,
    /// The socket failed: output is dropped, the session was told `ControlEof`.
    broken: bool,
    /// The server is shutting down: everything still open is closed at this time.
    hard_stop: Option<Instant>,
    /// Listeners and data connections, by the core's id.
    pub data: Vec<DataEntry>,
    /// Files opened for this session and not in a running transfer.
    pub files: Files,
}

/// Runs one admitted control connection to its end, then releases what it held and
/// tells `server` the session is gone.
///
/// Not an `async fn`: the driver is built here and moved into the future once, rather
/// than the future keeping the arguments beside the driver made from them.
pub(crate) fn run(
    ctx: Arc<Ctx>,
    server: Arc<Mutex<Server>>,
    stream: Async<TcpStream>,
    session: Session,
) -> impl Future<Output = ()> + Send + 'static {
    let (events, rx) = smol::channel::bounded(EVENTS);
    let mut d = Driver {
        stop: Box::pin(ctx.stop.subscribe()),
        ctx,
        session,
        stream,
        events,
        rx: Box::pin(rx),
        timer: Timer::never(),
        timer_at: None,
        readable: true,
        read_closed: false,
        closing: false,
        linger_until: None,
        broken: false,
        hard_stop: None,
        data: Vec::new(),
        files: Files::default(),
    };
    if let Some(live) = d.session.live() {
        // The sessions page's "disconnect": an event like any other. A full queue
        // means the session is busy with events; the click is then refused.
        let events = d.events.clone();
        live.set_disconnect(Box::new(move || {
            events.try_send(Box::new(Event::Disconnect)).is_ok()
        }));
    }
    async move {
        // A panic in this session's own work ends it alone: it is told 421, and the
        // release below runs as for any other end.
        let served = AssertUnwindSafe(async {
            d.drain();
            d.serve().await;
        });
        if let Err(panic) = served.catch_unwind().await {
            d.crash(&wharf_net::panic_message(&*panic));
        }
        let id = d.session.id();
        let files = d.release();
        lock(&server).session_closed(id);
        for f in files {
            dispose(f).await;
        }
    }
}

impl Driver {
    /// The loop: one control read (while the session wants bytes) and one queued event
    /// per turn, so neither a chatty client nor a busy transfer's events starve the
    /// other; when there is neither, wait.
    async fn serve(&mut self) {
        let mut reads = 0;
        loop {
            if self.finished() {
                return;
            }
            let mut busy = false;
            if self.readable && self.can_read() {
                busy = true;
                self.read_control();
                reads += 1;
                if reads >= self.ctx.control_reads_budget {
                    reads = 0;
                    future::yield_now().await;
                }
            }
            if let Ok(ev) = self.rx.try_recv() {
                busy = true;
                self.on_event(*ev);
            }
            if busy {
                continue;
            }
            reads = 0;
            self.arm_timer();
            let woke = self.wait().await;
            if woke.readable {
                self.readable = true;
            }
            if woke.writable {
                self.drain();
            }
            if let Some(ev) = woke.event {
                self.on_event(*ev);
            }
            if woke.shutdown {
                let now = Instant::now();
                self.hard_stop = Some(self.ctx.stop.deadline().unwrap_or(now));
                self.session.handle_input(now, Input::Shutdown);
                self.drain();
            }
            if woke.timer {
                self.timer_at = None;
                let now = Instant::now();
                let past = |t: Option<Instant>| t.is_some_and(|t| t <= now);
                if past(self.hard_stop) || past(self.linger_until) {
                    return;
                }
                if past(self.session.poll_timeout()) {
                    self.session.handle_timeout(now);
                    self.drain();
                }
            }
        }
    }

    /// Waits until at least one source is ready, and reports every source that is: each
    /// is polled every time (so each has its waker registered and none is passed over).
    ///
    /// Written as one `poll_fn` over the sources' own poll methods (no sub-futures), so
    /// a waiting session costs little more than its `Driver`.
    async fn wait(&mut self) -> Woke {
        let want_read = self.can_read();
        let want_write = !self.broken && self.session.poll_transmit().is_some();
        let watch_stop = self.hard_stop.is_none();
        future::poll_fn(|cx| {
            let mut woke = Woke::default();
            // We hold a sender ourselves: the channel is never closed while we wait.
            if let Poll::Ready(Some(ev)) = self.rx.as_mut().poll_next(cx) {
                woke.event = Some(ev);
            }
            woke.timer = Pin::new(&mut self.timer).poll(cx).is_ready();
            // Nothing is ever sent on the stop channel: it ends when it is closed.
            woke.shutdown = watch_stop && self.stop.as_mut().poll_next(cx).is_ready();
            // An error shows up again on the read or write that follows.
            woke.readable = want_read && self.stream.poll_readable(cx).is_ready();
            woke.writable = want_write && self.stream.poll_writable(cx).is_ready();
            match woke.any() {
                true => Poll::Ready(woke),
                false => Poll::Pending,
            }
        })
        .await
    }

    fn can_read(&self) -> bool {
        !self.read_closed && !self.broken && !self.closing && self.session.wants_read()
    }

    /// Done when the session closed and its last replies are out (or cannot go out).
    fn finished(&mut self) -> bool {
        let done = self.closing || self.session.is_closed();
        if !done {
            return false;
        }
        if self.linger_until.is_none() {
            self.linger_until = Some(Instant::now() + CLOSE_LINGER);
        }
        self.broken || self.session.poll_transmit().is_none()
    }

    /// Makes sure the timer fires no later than the earliest of the session's deadline,
    /// the close linger and the shutdown deadline.
    ///
    /// Lazily: the timer is only ever moved earlier. The idle deadline moves later with
    /// every command, and moving an async-io timer sends the reactor a message and wakes
    /// it (an eventfd write, another `epoll_wait` round): that was a third of the
    /// system calls of a NOOP. A timer left at an earlier deadline fires once for
    /// nothing, and is then set to the deadline of the day.
    fn arm_timer(&mut self) {
        let own = match self.linger_until {
            Some(t) => Some(t),
            None => self.session.poll_timeout(),
        };
        let want = [own, self.hard_stop].into_iter().flatten().min();
        if let Some(t) = want {
            if self.timer_at.is_none_or(|at| t < at) {
                self.timer.set_at(t);
                self.timer_at = Some(t);
            }
        }
    }

    /// One read of the control socket into the thread's scratch buffer, fed to the
    /// session, then the drain rule.
    fn read_control(&mut self) {
        let now = Instant::now();
        let read = SCRATCH_BUF.with(|buf| {
            let sock = self.stream.get_ref();
            wharf_net::read_control(&mut self.session, sock, &mut buf.borrow_mut(), now)
        });
        match read {
            ControlRead::Bytes | ControlRead::Retry => {}
            ControlRead::Closed => (self.readable, self.read_closed) = (false, true),
            ControlRead::Broken => (self.readable, self.broken) = (false, true),
            ControlRead::WouldBlock => self.readable = false,
        }
        if !matches!(read, ControlRead::WouldBlock | ControlRead::Retry) {
            self.drain();
        }
    }

    /// Feeds one input and drains.
    pub(crate) fn feed(&mut self, input: Input<'_>) {
        self.session.handle_input(Instant::now(), input);
        self.drain();
    }

    /// The drain rule: write what `poll_transmit` holds, perform every action (feeding
    /// back the inputs they produce at once), until the session has nothing more. The
    /// timer is re-armed from `poll_timeout` before the task waits again.
    pub(crate) fn drain(&mut self) {
        let mut inputs = std::collections::VecDeque::new();
        loop {
            self.flush();
            while let Some(action) = self.session.poll_action() {
                if let Some(input) = self.perform(action) {
                    inputs.push_back(input);
                }
            }
            match inputs.pop_front() {
                Some(input) => self.session.handle_input(Instant::now(), input),
                None => break,
            }
        }
    }

    /// Writes pending control output until it is all out or the socket is full.
    fn flush(&mut self) {
        wharf_net::flush_control(&mut self.session, self.stream.get_ref(), &mut self.broken);
        self.readable &= !self.broken;
    }

    /// Carries out one action; returns the input it produced at once, if any.
    fn perform(&mut self, action: Action) -> Option<Input<'static>> {
        match action {
            Action::Request { req, request } => {
                self.submit(req, request);
                None
            }
            Action::ListenData { conn, ip, ports } => Some(self.listen_data(conn, ip, ports)),
            Action::RefuseData { conn } => {
                self.refuse_data(conn);
                None
            }
            Action::ReadProxyHeader { conn } => {
                self.read_proxy_header(conn);
                None
            }
            Action::StopListening { conn } => {
                self.stop_listening(conn);
                None
            }
            Action::ConnectData {
                conn,
                local_ip,
                local_port,
                target,
            } => self.connect_data(conn, (local_ip, local_port), target),
            Action::StartTransfer {
                xfer,
                conn,
                file,
                pump,
            } => self.start_transfer(xfer, conn, file, pump),
            Action::AbortTransfer { xfer } => {
                self.abort_transfer(xfer);
                None
            }
            Action::CloseData { conn } => {
                self.close_data(conn);
                None
            }
            Action::PrepareTransfer { conn, pump } => {
                self.prepare_transfer(conn, pump);
                None
            }
            Action::Close => {
                self.closing = true;
                None
            }
            Action::Log(record) => {
                if let Some(sink) = &self.ctx.log {
                    sink.log(record);
                }
                None
            }
        }
    }

    /// Runs a request on the blocking pool (at most `blocking_limit` at once over the
    /// server); its completion comes back as an event.
    fn submit(&mut self, req: RequestId, request: Request) {
        let (handle, file) = self.files.prepare(&request);
        let ctx = self.ctx.clone();
        let events = self.events.clone();
        // Lookups wait on DNS: they have their own limit, so they never hold up storage.
        let lookup = matches!(request, Request::ReverseLookup { .. });
        let task = async move {
            let ran = {
                let limit = if lookup { &ctx.lookups } else { &ctx.blocking };
                let _permit = limit.acquire().await;
                let (storage, auth) = (ctx.storage.clone(), ctx.auth.clone());
                let resolver = ctx.resolver.clone();
                let now = SystemTime::now();
                let run = move || execute(&*storage, &*auth, &*resolver, request, file, now);
                smol::unblock(move || wharf_net::catch(run)).await
            };
            let ev = match ran {
                Ok((completion, file)) => Event::Completed {
                    req,
                    completion,
                    file: handle.zip(file),
                },
                Err(why) => Event::Crashed(why),
            };
            if let Some(f) = report(&events, ev).await.and_then(file_of) {
                dispose(f).await;
            }
        };
        self.ctx.ex.spawn(task).detach();
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Completed {
                req,
                completion,
                file,
            } => {
                if let Some((h, f)) = file {
                    self.files.put(h, f);
                }
                self.feed(Input::Completed { req, completion });
            }
            Event::Accepted {
                conn,
                peer,
                stream,
                listener,
            } => self.on_accepted(conn, peer, stream, listener),
            Event::Proxied {
                conn,
                client,
                peer,
                stream,
                listener,
            } => self.on_proxied(conn, client, (peer, stream), listener),
            Event::Connected { conn, stream } => self.on_connected(conn, stream),
            Event::Failed { conn, error } => self.on_failed(conn, error),
            Event::Crashed(why) => self.crash(&why),
            Event::Transfer { xfer, input, file } => self.on_transfer(xfer, input, file),
            Event::Disconnect => self.feed(Input::Disconnect),
        }
    }

    /// Ends a session that failed inside the server: 421, then the connection closes.
    pub(crate) fn crash(&mut self, why: &str) {
        let peer = self.stream.get_ref().peer_addr().ok();
        tracing::error!(session = %self.session.id(), ?peer, "session failed: {why}; closing it");
        if !self.broken {
            let _ = std::io::Write::write(&mut self.stream.get_ref(), wharf_net::INTERNAL_ERROR);
        }
        (self.closing, self.broken) = (true, true);
    }

    /// The session is over: closes the control connection, stops every helper (a
    /// running transfer returns its file through the channel, or disposes of it itself
    /// once the channel is closed) and returns the files left to dispose of.
    fn release(self) -> Vec<OpenFile> {
        let Driver {
            stream,
            rx,
            data,
            mut files,
            ..
        } = self;
        drop(stream);
        // Listener, connect and watch tasks are cancelled; transfers are told to stop.
        drop(data);
        rx.close();
        let mut left: Vec<OpenFile> = files.drain().into_iter().map(|(_, f)| f).collect();
        while let Ok(ev) = rx.try_recv() {
            left.extend(file_of(*ev));
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PumpLimits, Stop};
    use smol::lock::Semaphore;
    use wharf_core::memfs::{MemStorage, MemUsers};
    use wharf_core::SessionConfig;

    /// The per-session budget: what the task adds around its `Session` (the session
    /// itself is budgeted by the core) stays small, so idle sessions stay cheap.
    #[test]
    fn an_idle_session_task_is_small() {
        let (alive, _gone) = smol::channel::bounded(1);
        let ctx = Arc::new(Ctx {
            ex: Arc::new(smol::Executor::new()),
            storage: Arc::new(MemStorage::new()),
            auth: Arc::new(MemUsers::new()),
            limits: PumpLimits {
                buffer: 4096,
                budget: 65536,
                use_sendfile: false,
            },
            control_reads_budget: 8,
            ports: Arc::default(),
            stop: Arc::new(Stop::new()),
            blocking: Arc::new(Semaphore::new(1)),
            resolver: Arc::new(wharf_core::NoResolver),
            lookups: Arc::new(Semaphore::new(1)),
            log: None,
            _alive: alive,
        });
        let mut server = Server::new(Arc::new(SessionConfig::default()), 0, 1, 10);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let (local, remote) = (stream.local_addr().unwrap(), peer.local_addr().unwrap());
        let session = server.accept(Instant::now(), remote, local).unwrap();
        let server = Arc::new(Mutex::new(server));
        let task = run(ctx, server, Async::new(stream).unwrap(), session);
        let total = std::mem::size_of_val(&task);
        let session = std::mem::size_of::<Session>();
        let driver = std::mem::size_of::<Driver>();
        assert!(
            total - session <= 512,
            "the task adds {} bytes (driver {driver}, session {session})",
            total - session
        );
    }
}
