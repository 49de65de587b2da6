//! Admitting control connections: accept within a budget, hand each to the core's
//! `Server`, and survive running out of descriptors.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Interest;

use crate::shard::{control_token, Conn, Ready, Shard, ShardMsg, ACCEPT_BACKOFF, ACCEPT_BUDGET};
use wharf_net::is_exhaustion;
use wharf_net::timers::TimerSlot;

impl Shard {
    pub(crate) fn on_accept(&mut self, i: usize) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Some(l)) = self.listeners.get(i) else {
                return;
            };
            match l.accept() {
                Ok((stream, peer)) => {
                    // A panic admitting one connection (in the core) drops that one only.
                    if let Err(why) = wharf_net::catch(|| self.admit(stream, peer)) {
                        tracing::error!(shard = self.index, %peer, "admitting failed: {why}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_exhaustion(&e) => {
                    if !self.exhausted {
                        self.exhausted = true;
                        tracing::warn!(shard = self.index, "accept: {e}; refusing connections");
                    }
                    self.refuse_pending(i);
                    self.accept_retry = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
                Err(e) => tracing::debug!(shard = self.index, "accept: {e}"),
            }
        }
        self.ready.push_back(Ready::Accept(i));
    }

    /// Out of descriptors: closes the connections waiting in the backlog (through the
    /// descriptor held in reserve for this) rather than leaving their clients hanging.
    fn refuse_pending(&mut self, i: usize) {
        let Some(Some(l)) = self.listeners.get(i) else {
            return;
        };
        let reply = self.server.busy_reply().reply;
        self.spare
            .refuse_backlog(|| l.accept(), &reply, ACCEPT_BUDGET);
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if self.exhausted {
            self.exhausted = false;
            tracing::info!(shard = self.index, "accepting connections again");
        }
        let now = Instant::now();
        let Ok(local) = stream.local_addr() else {
            return;
        };
        wharf_net::prepare_control(&stream);
        let session = match self.server.accept(now, peer, local) {
            Ok(s) => s,
            Err(refusal) => return wharf_net::refuse(&stream, refusal, self.log.as_ref()),
        };
        if let (Some(live), Some(tx)) = (session.live(), &self.msg_tx) {
            let (tx, waker, id) = (tx.clone(), self.waker(), session.id());
            live.set_disconnect(Box::new(move || {
                tx.send(ShardMsg::Disconnect(id)).is_ok() && waker.wake().is_ok()
            }));
        }
        let gen = self.next_gen();
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, control_token(key), interest)
        {
            tracing::warn!("register control connection: {e}");
            self.server.session_closed(session.id());
            return;
        }
        entry.insert(Conn {
            session,
            stream,
            gen,
            timer: TimerSlot::default(),
            readable: true,
            closing: false,
            broken: false,
            queued: false,
            data: Vec::new(),
            files: wharf_net::Files::default(),
        });
        self.guard(key, |s| s.drive(key));
    }
}
