//! Crashes and restarts (issue 12): at a random durability step of the storage (every
//! step of an upload commit among them) or at a random time, the machine goes down.
//! Replies already on the wire still arrive; everything else in flight is lost; every
//! session and the `Server` are dropped; the storage keeps what was durable
//! ([`MemStorage::power_cut`]); a new `Server` starts on it. Each client then checks its
//! own directory: every change it was told had happened (an upload's `226`, MKD's `257`,
//! ...) is there, and a path only a command still in flight touched holds the old state
//! or the new one, never a partial file (a prefix only where partial files are allowed:
//! in-place writes, `keep_partial_uploads`). Clients that were connected come back and
//! carry on.
//!
//! The crash plan comes from a stream of its own, so a seed's other choices are the
//! same with or without it.

use std::time::Duration;

use wharf_core::memfs::MemStorage;
use wharf_core::typea::FromNetAscii;
use wharf_core::Server;

use super::client::{Client, ClientCx};
use super::model::{parent, pub_content, Look, PUB_FILES};
use super::plan::{How, Kind};
use super::rng::Rng;
use super::world::{Ev, Res, Sim, Slot};

/// When a crash comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashAt {
    /// Before the `n`th durability step of the storage from when it is armed.
    Step(u64),
    /// After this much virtual time from when it is armed.
    Time(Duration),
}

/// A seed's crashes, in order (none for most seeds).
pub fn plan(seed: u64) -> Vec<CrashAt> {
    let mut rng = Rng::stream(seed, "crash");
    if !rng.chance(35) {
        return Vec::new();
    }
    (0..rng.range(1, 3))
        .map(|_| match rng.chance(60) {
            true => CrashAt::Step(rng.range(1, 60)),
            false => CrashAt::Time(Duration::from_millis(rng.range(0, 40_000))),
        })
        .collect()
}

impl Sim {
    /// Arms the next crash of the plan, if any.
    pub(super) fn arm_next_crash(&mut self) {
        match self.crashes.pop_front() {
            Some(CrashAt::Step(n)) => self.storage.crash_after_steps(n),
            Some(CrashAt::Time(d)) => self.at(d, Ev::Crash),
            None => {}
        }
    }

    /// The machine went down (the storage says where): see the module documentation.
    pub(super) fn crash_restart(&mut self) -> Res {
        let label = self.storage.crashed().unwrap_or("time");
        self.count(&format!("crash:{label}"));
        self.note(0, "crash", label.as_bytes());
        // Bytes already on the wire reach their clients, and so do closes.
        let keys: Vec<(Duration, u64)> = self
            .queue
            .iter()
            .filter(|(_, ev)| matches!(ev, Ev::ReplyArrive { .. } | Ev::ServerClosed { .. }))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            match self.queue.remove(&key) {
                Some(Ev::ReplyArrive { s, bytes }) => {
                    self.client_io(s, |c, cx| c.on_bytes(cx, &bytes))?
                }
                Some(Ev::ServerClosed { s }) => {
                    self.client_io(s, |c, cx| c.on_server_closed(cx))?
                }
                _ => {}
            }
        }
        // Everything else in flight dies with the machine (clients not yet connected
        // still come, to the new server).
        self.queue
            .retain(|_, ev| matches!(ev, Ev::Shutdown | Ev::Connect { .. }));
        let mut live = Vec::new();
        for s in 0..self.slots.len() {
            let slot = &mut self.slots[s];
            if slot.session.take().is_some() {
                live.push(s);
            }
            // Open uploads go without a commit (the storage is down: nothing they do
            // reaches the disk).
            slot.files.clear();
            slot.closing.clear();
            slot.xfers.clear();
            slot.conns.clear();
        }
        self.used_ports.clear();
        self.server = Server::new(self.cfg.clone(), 0, 1, self.server_max);
        let cut = self.crash_rng.next_u64();
        self.storage.power_cut(cut);
        for s in 0..self.clients.len() {
            self.client_io(s, |c, cx| c.after_crash(cx))
                .map_err(|e| format!("after a crash before {label}: {e}"))?;
        }
        for (path, len) in PUB_FILES {
            if self.storage.read_file(path) != Some(pub_content(path, *len)) {
                return Err(format!("after a crash before {label}: {path} changed"));
            }
        }
        for s in live {
            let c = &mut self.clients[s];
            if c.fin || c.goodbye || c.server_closed || (c.ops_left == 0 && c.steps.is_empty()) {
                c.server_closed = true;
                continue;
            }
            c.restart();
            let v6 = c.v6;
            self.slots[s] = Slot::new(s, v6);
            let after = Duration::from_millis(self.crash_rng.range(100, 3000));
            self.at(after, Ev::Connect { s });
        }
        self.arm_next_crash();
        Ok(())
    }
}

/// What a command still in flight at the crash may have done to a path.
enum Uncertain {
    /// STOR or APPE: the old file, the whole upload, or what partial results the
    /// upload's kind allows.
    Store {
        path: String,
        how: How,
        offset: u64,
        body: Vec<u8>,
    },
    /// STOU: maybe a new file next to `path`, holding the upload.
    Unique { dir: String, body: Vec<u8> },
    /// MKD, RMD, DELE, RNTO: done or not; nothing below these paths is checked.
    Either(Vec<String>),
}

impl Client {
    /// After a power cut, with every session gone: the client's directory holds what
    /// the client was told (see the module documentation). Then the model takes the
    /// directory as it is, since the outcome of what was in flight is now known.
    pub fn after_crash(&mut self, cx: &mut ClientCx<'_>) -> Res {
        let storage = cx.storage;
        if self.unknown_upload {
            // An upload was abandoned unseen before the crash: nothing exact to check.
            self.count("crash:unknown");
        } else {
            let uncertain = self.in_flight();
            self.count(if uncertain.is_empty() {
                "crash:checked-exact"
            } else {
                "crash:checked-in-flight"
            });
            self.check_after_crash(cx, storage, &uncertain)?;
        }
        self.model.resync(storage);
        self.unknown_upload = false;
        // Everything a restart finds is on disk.
        self.unsettled.clear();
        Ok(())
    }

    /// The commands sent and not answered, as what they may have changed.
    fn in_flight(&self) -> Vec<Uncertain> {
        let mut out = Vec::new();
        // RNTO's source: RNFR's path, answered or (pipelined) in flight itself.
        let mut rnfr = self.rnfr.clone();
        for sent in &self.outstanding {
            match &sent.kind {
                Kind::Rnfr { path } => rnfr = path.clone(),
                Kind::Store {
                    path: Some(path),
                    how,
                    data,
                    ..
                } => {
                    let mut body = Vec::new();
                    if self.ascii {
                        let mut dec = FromNetAscii::default();
                        dec.decode(&data.0, &mut body);
                        dec.finish(&mut body);
                    } else {
                        body.extend_from_slice(&data.0);
                    }
                    out.push(match how {
                        How::Stou => Uncertain::Unique {
                            dir: parent(path),
                            body,
                        },
                        how => Uncertain::Store {
                            path: path.clone(),
                            how: *how,
                            offset: self.rest,
                            body,
                        },
                    });
                }
                Kind::Mkd { path: Some(p) }
                | Kind::Rmd { path: Some(p) }
                | Kind::Dele { path: Some(p) } => out.push(Uncertain::Either(vec![p.clone()])),
                Kind::Rnto { path: Some(to) } => {
                    let mut paths = vec![to.clone()];
                    paths.extend(rnfr.take());
                    out.push(Uncertain::Either(paths));
                }
                _ => {}
            }
        }
        out
    }

    fn check_after_crash(
        &self,
        cx: &ClientCx<'_>,
        storage: &MemStorage,
        uncertain: &[Uncertain],
    ) -> Res {
        let prefix = format!("{}/", self.model.own);
        let mut paths: Vec<String> = storage
            .paths()
            .into_iter()
            .filter(|p| p.starts_with(&prefix))
            .collect();
        paths.extend(
            self.model
                .tree
                .keys()
                .filter(|p| p.starts_with(&prefix))
                .cloned(),
        );
        paths.sort();
        paths.dedup();
        let within = |p: &str, root: &str| p == root || p.starts_with(&format!("{root}/"));
        for path in paths {
            let stored = storage.exists(&path).then(|| storage.read_file(&path));
            let known = self.model.tree.get(&path).cloned();
            let either = uncertain.iter().any(|u| match u {
                Uncertain::Either(roots) => roots.iter().any(|r| within(&path, r)),
                _ => false,
            });
            if either {
                continue;
            }
            let store = uncertain.iter().find_map(|u| match u {
                Uncertain::Store {
                    path: p,
                    how,
                    offset,
                    body,
                } if *p == path => Some((*how, *offset, body)),
                _ => None,
            });
            if let Some((how, offset, body)) = store {
                let old = match self.model.look(&path) {
                    Look::File(b) => Some(b),
                    _ => None,
                };
                let whole = super::expect::stored_upload(how, offset, old.as_deref(), body);
                let got = stored.clone().flatten();
                if got.as_deref() == Some(&whole[..]) {
                    continue;
                }
                // Earlier failed uploads may have left the path unsettled: what they
                // could leave is possible too.
                let unsettled = self.unsettled.get(&path);
                if unsettled.is_some_and(|u| self.unsettled_ok(cx, &path, u, &known, &stored)) {
                    continue;
                }
                let before = unsettled.and_then(|u| u.baseline.clone().flatten());
                if self
                    .failed_upload(
                        cx,
                        how,
                        offset,
                        before.as_deref(),
                        body,
                        got.as_deref(),
                        &path,
                    )
                    .is_ok()
                {
                    continue;
                }
                self.failed_upload(cx, how, offset, old.as_deref(), body, got.as_deref(), &path)
                    .map_err(|e| format!("in flight at the crash: {e}"))?;
                continue;
            }
            let unique = uncertain.iter().find_map(|u| match u {
                Uncertain::Unique { dir, body } if parent(&path) == *dir && known.is_none() => {
                    Some(body)
                }
                _ => None,
            });
            if let (Some(body), Some(Some(got))) = (unique, &stored) {
                let partial = cx.cfg.keep_partial_uploads && body.starts_with(got);
                if *got == *body || partial {
                    continue;
                }
                return Err(format!(
                    "{path}: {} bytes of a STOU in flight at the crash, of {}",
                    got.len(),
                    body.len()
                ));
            }
            if let Some(u) = self.unsettled.get(&path) {
                if self.unsettled_ok(cx, &path, u, &known, &stored) {
                    continue;
                }
                return Err(format!(
                    "{path}: {} after the crash, but a failed upload left {} from {}",
                    show(&stored),
                    show(&known),
                    show(&u.baseline)
                ));
            }
            if stored != known {
                return Err(format!(
                    "{path}: acknowledged as {} but {} after the crash",
                    show(&known),
                    show(&stored)
                ));
            }
        }
        Ok(())
    }
}

impl Client {
    /// A path failed uploads changed: after a crash it may hold what they left, the
    /// state before them, or what any of them could have left had it failed earlier.
    fn unsettled_ok(
        &self,
        cx: &ClientCx<'_>,
        path: &str,
        u: &super::client::Unsettled,
        known: &Option<Option<Vec<u8>>>,
        stored: &Option<Option<Vec<u8>>>,
    ) -> bool {
        if stored == known || *stored == u.baseline {
            return true;
        }
        let file = |s: &Option<Option<Vec<u8>>>| s.clone().flatten();
        let got = file(stored);
        [file(&u.baseline), file(known)].iter().any(|old| {
            u.failed.iter().any(|(how, offset, body)| {
                self.failed_upload(
                    cx,
                    *how,
                    *offset,
                    old.as_deref(),
                    body,
                    got.as_deref(),
                    path,
                )
                .is_ok()
            })
        })
    }
}

fn show(state: &Option<Option<Vec<u8>>>) -> String {
    match state {
        None => "missing".into(),
        Some(None) => "a directory".into(),
        Some(Some(b)) => format!("a file of {} bytes", b.len()),
    }
}
