//! The live sessions board: what every session is doing now, for an administrator's
//! "current sessions" page (IIS's FTP Current Sessions), and the handle that ends one.
//!
//! A [`Board`] is shared by every shard ([`crate::Server::with_board`]); without one,
//! sessions pay nothing. With one, each admitted session registers a [`LiveSession`]
//! and keeps it current: a command costs one uncontended lock (its verb and argument),
//! a transfer's progress one relaxed atomic store. A session leaves the board when it is
//! dropped, however it ended. Reading the board ([`Board::snapshot`]) copies each entry
//! under its own lock, so a page being read never holds up a session for long.
//!
//! Ending a session is the runtime's: [`LiveSession::set_disconnect`] is given, once the
//! runtime has the session in its loop, a function that delivers
//! [`crate::Input::Disconnect`] to it (a message to its shard, a signal to its task).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::ids::SessionId;

/// Every live session of a server.
#[derive(Debug, Default)]
pub struct Board {
    sessions: Mutex<BTreeMap<u64, Arc<LiveSession>>>,
}

/// How a runtime ends one session: called from the admin's thread, it must not block;
/// false when the request could not be delivered.
pub type Disconnect = Box<dyn Fn() -> bool + Send + Sync>;

/// One session's live state.
pub struct LiveSession {
    pub id: SessionId,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// When it was admitted (the driver's clock).
    pub opened: Instant,
    state: Mutex<LiveState>,
    /// The running transfer's bytes so far (the pump reports once a second).
    transferred: AtomicU64,
    disconnect: OnceLock<Disconnect>,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("id", &self.id)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
struct LiveState {
    site: Arc<str>,
    /// The client a balancer's PROXY protocol header named (the connection's peer is
    /// the balancer then).
    proxied: Option<SocketAddr>,
    user: Option<Arc<str>>,
    logged_in: bool,
    tls: bool,
    command: Option<String>,
    /// The last command's text, kept for the next one's.
    spare: Option<String>,
    transfer: Option<LiveTransfer>,
}

#[derive(Debug, Clone)]
struct LiveTransfer {
    upload: bool,
    path: String,
    size: Option<u64>,
    started: Instant,
}

/// A copy of one session's state, as [`Board::snapshot`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: SessionId,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub site: Arc<str>,
    /// The user name given (USER), or the logged-in user.
    pub user: Option<Arc<str>>,
    pub logged_in: bool,
    /// The control channel is encrypted.
    pub tls: bool,
    pub opened: Instant,
    /// The command running now (`RETR /big.iso`; PASS's argument is never shown).
    pub command: Option<String>,
    pub transfer: Option<TransferView>,
}

/// A running transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferView {
    pub upload: bool,
    pub path: String,
    pub bytes: u64,
    /// A download's file size (progress is `bytes / size`).
    pub size: Option<u64>,
    pub started: Instant,
}

impl Board {
    pub fn new() -> Arc<Board> {
        Arc::new(Board::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<LiveSession>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session; it leaves the board when the returned handle is dropped.
    pub(crate) fn open(
        self: &Arc<Board>,
        id: SessionId,
        (client, server): (SocketAddr, SocketAddr),
        site: Arc<str>,
        opened: Instant,
    ) -> LiveHandle {
        let entry = Arc::new(LiveSession {
            id,
            client,
            server,
            opened,
            state: Mutex::new(LiveState {
                site,
                ..LiveState::default()
            }),
            transferred: AtomicU64::new(0),
            disconnect: OnceLock::new(),
        });
        self.lock().insert(id.0, entry.clone());
        LiveHandle {
            board: self.clone(),
            entry,
        }
    }

    /// Every live session, in id order.
    pub fn snapshot(&self) -> Vec<SessionView> {
        let entries: Vec<Arc<LiveSession>> = self.lock().values().cloned().collect();
        entries.iter().map(|e| e.view()).collect()
    }

    /// The live session `id`, if any.
    pub fn get(&self, id: SessionId) -> Option<Arc<LiveSession>> {
        self.lock().get(&id.0).cloned()
    }

    /// Sessions on the board.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the runtime to end session `id` (`421`, then close; a running transfer is
    /// aborted). False when there is no such session, or its runtime has not yet said
    /// how to reach it.
    pub fn disconnect(&self, id: SessionId) -> bool {
        match self.get(id) {
            Some(e) => e.disconnect.get().is_some_and(|f| f()),
            None => false,
        }
    }
}

impl LiveSession {
    fn state(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How the runtime ends this session (see [`Board::disconnect`]); set once.
    pub fn set_disconnect(&self, f: Disconnect) {
        let _ = self.disconnect.set(f);
    }

    /// The client a balancer's PROXY protocol header named: shown instead of the
    /// balancer's address.
    pub(crate) fn set_client(&self, client: SocketAddr) {
        self.state().proxied = Some(client);
    }

    fn view(&self) -> SessionView {
        let s = self.state().clone();
        SessionView {
            id: self.id,
            client: s.proxied.unwrap_or(self.client),
            server: self.server,
            site: s.site,
            user: s.user,
            logged_in: s.logged_in,
            tls: s.tls,
            opened: self.opened,
            command: s.command,
            transfer: s.transfer.map(|t| TransferView {
                upload: t.upload,
                path: t.path,
                bytes: self.transferred.load(Ordering::Relaxed),
                size: t.size,
                started: t.started,
            }),
        }
    }
}

/// A session's entry on the board; dropping it takes the entry off.
#[derive(Debug)]
pub struct LiveHandle {
    board: Arc<Board>,
    entry: Arc<LiveSession>,
}

impl LiveHandle {
    /// The entry, for the runtime to [`LiveSession::set_disconnect`].
    pub fn entry(&self) -> &Arc<LiveSession> {
        &self.entry
    }

    pub(crate) fn command(&self, verb: &str, arg: &str) {
        let mut s = self.entry.state();
        // The buffer of the previous command is reused: no allocation per command.
        let mut text = s.spare.take().unwrap_or_default();
        text.clear();
        text.push_str(verb);
        if !arg.is_empty() {
            text.push(' ');
            text.push_str(arg);
        }
        s.command = Some(text);
    }

    /// A command ended: who and where the session is now.
    pub(crate) fn idle(&self, site: &str, user: Option<&str>, logged_in: bool, tls: bool) {
        let mut s = self.entry.state();
        if let Some(done) = s.command.take() {
            s.spare = Some(done);
        }
        if *s.site != *site {
            s.site = site.into();
        }
        if s.user.as_deref() != user {
            s.user = user.map(Arc::from);
        }
        s.logged_in = logged_in;
        s.tls = tls;
    }

    pub(crate) fn transfer_started(
        &self,
        now: Instant,
        upload: bool,
        path: String,
        size: Option<u64>,
    ) {
        self.entry.transferred.store(0, Ordering::Relaxed);
        self.entry.state().transfer = Some(LiveTransfer {
            upload,
            path,
            size,
            started: now,
        });
    }

    #[inline]
    pub(crate) fn progress(&self, bytes: u64) {
        self.entry.transferred.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn transfer_ended(&self) {
        self.entry.state().transfer = None;
    }
}

impl Drop for LiveHandle {
    fn drop(&mut self) {
        self.board.lock().remove(&self.entry.id.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn sessions_come_and_go_and_can_be_ended() {
        let board = Board::new();
        let t0 = Instant::now();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let h = board.open(SessionId(7), (addr, addr), "a".into(), t0);
        assert!(!board.disconnect(SessionId(7)), "no runtime hook yet");
        let hit = Arc::new(AtomicBool::new(false));
        let flag = hit.clone();
        h.entry().set_disconnect(Box::new(move || {
            flag.store(true, Ordering::SeqCst);
            true
        }));
        h.command("RETR", "/x");
        h.transfer_started(t0, false, "/x".into(), Some(10));
        h.progress(4);
        let v = board.snapshot();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].command.as_deref(), Some("RETR /x"));
        let t = v[0].transfer.as_ref().unwrap();
        assert_eq!((t.bytes, t.size), (4, Some(10)));
        assert!(board.disconnect(SessionId(7)));
        assert!(hit.load(Ordering::SeqCst));
        assert!(!board.disconnect(SessionId(8)));
        drop(h);
        assert!(board.is_empty());
    }
}
