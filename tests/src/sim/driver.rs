//! How the simulated runtime carries out the core's actions: storage and authentication
//! requests (run late, in order per session, against `MemStorage`/`MemUsers`), and the
//! end of a session. Data-connection actions are in `data.rs`.

use std::time::Duration;

use wharf_core::backend::{execute, OpenFile};
use wharf_core::{Action, AuthError, Completion, Input, Request, RequestId, VPath};

use super::client::{ClientCx, ClientOut};
use super::world::{Ev, Res, Sim};

impl Sim {
    pub fn perform(&mut self, s: usize, action: Action) -> Res {
        let shown = format!("{action:?}");
        let variant = shown.split([' ', '{', '(']).next().unwrap_or("");
        self.count(&format!("action:{variant}"));
        self.note(s, "action", shown.as_bytes());
        match action {
            Action::Request { req, request } => self.request(s, req, request),
            Action::Close => self.close(s),
            Action::Log(rec) => match rec.status {
                0 | 100..=599 if self.cfg.logging.is_some() => Ok(()),
                _ => Err(format!("s{s}: bad log record {rec:?}")),
            },
            other => self.data_action(s, other),
        }
    }

    fn request(&mut self, s: usize, req: RequestId, request: Request) -> Res {
        check_paths(&request).map_err(|e| format!("s{s}: {e} in {request:?}"))?;
        let slot = &mut self.slots[s];
        match &request {
            Request::OpenRead { file, .. } | Request::OpenWrite { file, .. }
                if slot.files.contains_key(file) || slot.closing.contains(file) =>
            {
                return Err(format!("s{s}: file handle {file} reused"));
            }
            Request::CloseFile { file, .. } => {
                if !slot.files.contains_key(file) {
                    return Err(format!("s{s}: CloseFile of {file}, which is not open"));
                }
                if !slot.closing.insert(*file) {
                    return Err(format!("s{s}: CloseFile of {file} twice"));
                }
            }
            _ => {}
        }
        let mut delay = Duration::from_micros(
            self.store_rng
                .range(0, self.swarm.storage_delay.as_micros() as u64),
        );
        if matches!(request, Request::Authenticate { .. })
            && self.swarm.auth_hangs
            && self.store_rng.chance(30)
        {
            delay += self.cfg.timeouts.login + Duration::from_secs(1);
        }
        // One worker per session: completions come back in the order asked.
        let at = (self.now + delay).max(self.slots[s].req_at + Duration::from_micros(1));
        self.slots[s].req_at = at;
        self.at(at - self.now, Ev::Complete { s, req, request });
        Ok(())
    }

    /// Runs a request when its simulated worker finishes, then reports it.
    pub fn complete(&mut self, s: usize, req: RequestId, request: Request) -> Res {
        if self.slots[s].session.is_none() {
            return Ok(()); // the session ended; its files were released at Close
        }
        self.storage.set_time(self.wall());
        self.apply_storage_faults();
        let file = match &request {
            Request::CloseFile { file, .. } => {
                self.slots[s].closing.remove(file);
                self.slots[s].files.remove(file)
            }
            _ => None,
        };
        let handle = match &request {
            Request::OpenRead { file, .. } | Request::OpenWrite { file, .. } => Some(*file),
            _ => None,
        };
        let backend_error = matches!(request, Request::Authenticate { .. })
            && self.swarm.auth_errors
            && self.store_rng.chance(25);
        let (completion, opened) = if backend_error {
            (
                Completion::Auth(Err(AuthError::Backend("sim".into()))),
                None,
            )
        } else {
            execute(
                &self.storage,
                &self.users,
                &wharf_core::NoResolver,
                request,
                file,
                self.wall(),
            )
        };
        if self.storage.crashed().is_some() {
            // The machine went down inside this request: its answer never comes.
            drop(opened);
            return self.crash_restart();
        }
        if let (Some(h), Some(f)) = (handle, opened) {
            self.slots[s].files.insert(h, f);
        }
        self.note(s, "completed", format!("{req} {completion:?}").as_bytes());
        self.feed(s, Input::Completed { req, completion })
    }

    /// Fault windows: each fault kind of the seed is on for some requests only, so a
    /// session sees both failures and recoveries.
    fn apply_storage_faults(&mut self) {
        let io_error = self.swarm.io_errors && self.store_rng.chance(15);
        self.storage.set_faults(wharf_core::memfs::Faults {
            capacity: self.swarm.capacity,
            io_error,
            short_writes: self.swarm.short_writes,
        });
    }

    /// `Action::Close`: flush the replies, close the connection, release everything.
    fn close(&mut self, s: usize) -> Res {
        self.transmit(s, true);
        let stall = self.cfg.timeouts.transfer_stall;
        let now = self.now;
        // Only a timer closes a session with a transfer still running; the stall timer
        // is the one meant for transfers, so a live one must not be cut off.
        let live = self.slots[s].xfers.values().any(|x| x.live(now, stall));
        if live && super::known_bugs::IDLE_KILLS_TRANSFER {
            self.count("known-bug:idle-kills-transfer");
        } else if let Some(x) = self.slots[s].xfers.values().find(|x| x.live(now, stall)) {
            return Err(format!(
                "s{s}: closed while its transfer was making progress (last at {:?})",
                x.last_moved
            ));
        }
        let slot = &mut self.slots[s];
        let Some(session) = slot.session.take() else {
            return Err(format!("s{s}: Close twice"));
        };
        // Files: uploads are discarded (dropping them discards), reads closed.
        for (_, file) in std::mem::take(&mut slot.files) {
            if let OpenFile::Write(upload) = file {
                upload.discard();
            }
        }
        slot.closing.clear();
        slot.xfers.clear();
        let ports: Vec<u16> = slot.conns.values().filter_map(|c| c.port).collect();
        slot.conns.clear();
        for port in ports {
            self.used_ports.remove(&port);
        }
        self.server.session_closed(session.id());
        let at = self.slots[s].s2c_at.max(self.now);
        self.at(at - self.now, Ev::ServerClosed { s });
        self.note(s, "closed", &[]);
        Ok(())
    }

    /// Runs client code with a context and applies what it asks of the network.
    pub fn client_io(
        &mut self,
        s: usize,
        f: impl FnOnce(&mut super::client::Client, &mut ClientCx<'_>) -> Res,
    ) -> Res {
        let mut cx = ClientCx {
            now: self.now,
            storage: &self.storage,
            cfg: &self.cfg,
            swarm: &self.swarm,
            out: Vec::new(),
        };
        f(&mut self.clients[s], &mut cx).map_err(|e| format!("s{s}: {e}"))?;
        for out in std::mem::take(&mut cx.out) {
            match out {
                ClientOut::Send(bytes) => self.client_send(s, bytes),
                ClientOut::Eof { reset } => {
                    self.note(s, if reset { "client-reset" } else { "client-fin" }, &[]);
                    let at = if reset {
                        self.now
                    } else {
                        self.slots[s].c2s_at.max(self.now)
                    };
                    self.at(at - self.now, Ev::CtlEof { s, reset });
                }
                ClientOut::Wake(after) => self.at(after, Ev::ClientWake { s }),
            }
        }
        if self.swarm.spurious_wakeups && self.net.chance(10) {
            let after = Duration::from_millis(self.net.range(0, 5_000));
            self.at(after, Ev::Spurious { s });
        }
        Ok(())
    }
}

/// Every path the core hands to storage must be normalised and inside the user's root
/// (the whole tree, until user isolation lands).
fn check_paths(request: &Request) -> Result<(), String> {
    let paths: Vec<&VPath> = match request {
        Request::Stat { path }
        | Request::ReadDir { path }
        | Request::OpenRead { path, .. }
        | Request::OpenWrite { path, .. }
        | Request::MakeDir { path }
        | Request::RemoveDir { path }
        | Request::RemoveFile { path }
        | Request::SetModified { path, .. } => vec![path],
        Request::Rename { from, to, .. } => vec![from, to],
        Request::Authenticate { .. }
        | Request::CloseFile { .. }
        | Request::ReverseLookup { .. } => vec![],
    };
    for p in paths {
        let p = p.as_str();
        let bad = !p.starts_with('/')
            || (p.len() > 1 && p.ends_with('/'))
            || p.contains('\0')
            || p[1..]
                .split('/')
                .any(|seg| matches!(seg, "." | "..") || (p.len() > 1 && seg.is_empty()));
        if bad {
            return Err(format!("unnormalised storage path {p:?}"));
        }
    }
    Ok(())
}
