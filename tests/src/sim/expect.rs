//! The oracle: given what a client believes (model, login, data channel, REST), which
//! final replies a command may get, and what a success must have done.

use std::time::Duration;

use wharf_core::typea::{FromNetAscii, ToNetAscii};

use super::client::{Client, ClientCx, Sent};
use super::model::{parent, Look};
use super::plan::{How, Kind, ListVerb};

type Res = Result<(), String>;

fn want(code: u16, ok: &[u16]) -> Res {
    if ok.contains(&code) {
        Ok(())
    } else {
        Err(format!("expected one of {ok:?}"))
    }
}

/// Codes a transfer may end with once its 150 was sent.
const XFER_END: &[u16] = &[226, 425, 426, 451, 452, 550, 552];

impl Client {
    fn may_write(&self, cx: &ClientCx<'_>) -> bool {
        self.logged_in
            && if self.anon {
                cx.cfg.anonymous_write
            } else {
                cx.cfg.user_write
            }
    }

    /// Judges one final reply.
    pub fn expect(&mut self, cx: &mut ClientCx<'_>, sent: Sent, code: u16, text: &str) -> Res {
        let kind = sent.kind;
        if !matches!(kind, Kind::Rnto { .. } | Kind::Rnfr { .. }) {
            self.rnfr = None;
        }
        let needs_login = !matches!(
            kind,
            Kind::Greeting { .. }
                | Kind::User { .. }
                | Kind::Pass { .. }
                | Kind::Fixed(_)
                | Kind::Auth
                | Kind::Prot { .. }
                | Kind::Quit
        );
        if needs_login && !self.logged_in {
            return want(code, &[530]);
        }
        // A transfer command spends REST and the data channel whatever its fate.
        let (rest, data_ready) = match kind.is_transfer() {
            true => (
                std::mem::take(&mut self.rest),
                std::mem::take(&mut self.data_ready),
            ),
            false => (self.rest, self.data_ready),
        };
        let io = cx.swarm.io_errors;
        // With injected I/O errors any storage operation may also fail with 451.
        let fs = |code: u16, ok: &[u16]| -> Res {
            if io && code == 451 {
                Ok(())
            } else {
                want(code, ok)
            }
        };
        match kind {
            Kind::Greeting { .. } => want(code, &[220]),
            Kind::User { anon } => self.check_user(cx, anon, code),
            Kind::Pass { good } => self.check_pass(cx, good, code, sent.at),
            Kind::Fixed(ok) => want(code, ok),
            Kind::Quit => want(code, &[221]),
            Kind::Abor => {
                // ABOR closes any data connection, running transfer or not.
                self.data_ready = false;
                want(code, &[225, 226])
            }
            Kind::Auth => {
                want(code, &[234])?;
                self.start_tls(cx, sent.at)
            }
            Kind::Prot { private } => {
                want(code, &[200])?;
                self.prot_private = private;
                Ok(())
            }
            Kind::Type { ascii } => {
                self.ascii = ascii;
                want(code, &[200])
            }
            Kind::Pwd => {
                want(code, &[257])?;
                let quoted = format!("\"{}\"", self.cwd.replace('"', "\"\""));
                match text.starts_with(&quoted) {
                    true => Ok(()),
                    false => Err(format!("PWD should show {quoted}")),
                }
            }
            Kind::Rest { offset } => {
                self.rest = offset;
                want(code, &[350])
            }
            Kind::Pasv { extended } => self.check_pasv(cx, extended, code, text),
            Kind::Port { ok } => {
                // A refused PORT/EPRT leaves no data channel, not even an earlier one.
                self.data_ready = ok;
                if ok {
                    return want(code, &[200]);
                }
                want(code, &[501, 504])
            }
            Kind::Cwd { path } => {
                let Some(path) = path else {
                    return want(code, &[553]);
                };
                let ok = match self.model.look(&path) {
                    Look::Dir => &[250][..],
                    Look::Unknown => &[250, 550],
                    _ => &[550],
                };
                fs(code, ok)?;
                if code == 250 {
                    self.cwd = path;
                }
                Ok(())
            }
            Kind::Size { path } | Kind::Mdtm { path } => {
                let Some(path) = path else {
                    return want(code, &[553]);
                };
                match self.model.look(&path) {
                    Look::File(_)
                        if code == 213
                            && text.len() == 14
                            && text.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        Ok(())
                    }
                    Look::File(b) if code == 213 && text == b.len().to_string() => Ok(()),
                    Look::File(_) => fs(code, &[]),
                    Look::Unknown => fs(code, &[213, 550]),
                    _ => fs(code, &[550]),
                }
            }
            Kind::StatPath { path } => {
                let Some(path) = path else {
                    return want(code, &[553]);
                };
                match self.model.look(&path) {
                    Look::Dir => fs(code, &[212]),
                    Look::File(_) => fs(code, &[213]),
                    Look::Unknown => fs(code, &[212, 213, 550]),
                    Look::Missing => fs(code, &[550]),
                }
            }
            Kind::Mkd { .. }
            | Kind::Rmd { .. }
            | Kind::Dele { .. }
            | Kind::Rnfr { .. }
            | Kind::Rnto { .. } => self.check_change(cx, kind, code),
            Kind::List { verb, path } => {
                self.check_list(cx, verb, path, data_ready, sent.prelim, code)
            }
            Kind::Retr { path, .. } => {
                self.check_retr(cx, path, (data_ready, rest), sent.prelim, code)
            }
            Kind::Store {
                path, how, data, ..
            } => {
                let xfer = (data_ready, rest);
                self.check_store(cx, path, how, &data.0, xfer, sent.prelim, code, text)
            }
            Kind::Fin { .. } => Err("FIN is not a command".into()),
        }
    }

    fn check_user(&mut self, cx: &ClientCx<'_>, anon: bool, code: u16) -> Res {
        if self.logged_in {
            return want(code, &[530]);
        }
        self.user_ok = !anon || cx.cfg.allow_anonymous;
        self.anon = anon;
        want(code, if self.user_ok { &[331] } else { &[530] })
    }

    fn check_pass(&mut self, cx: &ClientCx<'_>, good: bool, code: u16, sent: Duration) -> Res {
        if self.logged_in || !std::mem::take(&mut self.user_ok) {
            return want(code, &[503]);
        }
        // A refused password is answered no sooner than the failed-login delay after the
        // server read it, which is after the client sent it.
        let delay = cx.cfg.failed_login_delay;
        if code == 530 && cx.now < sent + delay {
            return Err(format!(
                "530 for PASS after {:?}, before the failed-login delay of {delay:?}",
                cx.now - sent
            ));
        }
        let ok = match (self.anon, good, cx.swarm.auth_errors) {
            (true, _, _) => &[230][..],
            (false, true, false) => &[230],
            (false, true, true) => &[230, 530],
            (false, false, _) => &[530],
        };
        want(code, ok)?;
        self.logged_in = code == 230;
        Ok(())
    }

    fn check_pasv(&mut self, cx: &ClientCx<'_>, extended: bool, code: u16, text: &str) -> Res {
        // Refused or not, the old channel is gone.
        self.data_ready = false;
        if self.v6 && !extended {
            return want(code, &[425]);
        }
        want(code, &[if extended { 229 } else { 227 }, 425])?;
        if code == 425 {
            return Ok(());
        }
        self.data_ready = true;
        let digits: Vec<u32> = text
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|d| d.parse().ok())
            .collect();
        let port = match (extended, digits.as_slice()) {
            (true, [port]) => *port,
            (false, [.., hi, lo]) => hi * 256 + lo,
            _ => return Err("no port in the reply".into()),
        };
        let range = &cx.cfg.passive_ports;
        match u16::try_from(port).is_ok_and(|p| range.contains(&p)) {
            true => Ok(()),
            false => Err(format!("port {port} outside {range:?}")),
        }
    }

    /// MKD, RMD, DELE, RNFR, RNTO: predicted from the model, then applied to it.
    fn check_change(&mut self, cx: &ClientCx<'_>, kind: Kind, code: u16) -> Res {
        let io = cx.swarm.io_errors;
        let (path, is_rnto) = match &kind {
            Kind::Rnto { path } => (path.clone(), true),
            Kind::Mkd { path } | Kind::Rmd { path } | Kind::Dele { path } | Kind::Rnfr { path } => {
                (path.clone(), false)
            }
            _ => unreachable!("only changes come here"),
        };
        let from = if is_rnto { self.rnfr.take() } else { None };
        if is_rnto && from.is_none() {
            return want(code, &[503]);
        }
        let Some(path) = path else {
            return want(code, &[553]);
        };
        if !self.may_write(cx) {
            return want(code, &[550]);
        }
        let look = self.model.look(&path);
        let parent_dir = self.model.look(&parent(&path)) == Look::Dir;
        let success = match (&kind, &look) {
            (_, Look::Unknown) => return Err(format!("{path}: changes outside the own directory")),
            (Kind::Mkd { .. }, Look::Missing) => parent_dir,
            (Kind::Rmd { .. }, Look::Dir) => {
                path != "/" && self.model.children(&path).is_some_and(|c| c.is_empty())
            }
            (Kind::Dele { .. }, Look::File(_)) => true,
            (Kind::Rnfr { .. }, Look::File(_) | Look::Dir) => true,
            (Kind::Rnto { .. }, _) => {
                let replace = cx.cfg.allow_replace_on_rename;
                self.rename_ok(
                    from.as_deref().unwrap_or("/"),
                    &path,
                    &look,
                    parent_dir,
                    replace,
                )
            }
            _ => false,
        };
        let good = match &kind {
            Kind::Mkd { .. } => 257,
            Kind::Rnfr { .. } => 350,
            _ => 250,
        };
        let bad: &[u16] = if is_rnto { &[550, 553] } else { &[550] };
        if io && code == 451 {
            return Ok(());
        }
        match success {
            true => want(code, &[good])?,
            false => want(code, bad)?,
        }
        if !success {
            return Ok(());
        }
        match kind {
            Kind::Mkd { .. } => {
                self.model.tree.insert(path, None);
            }
            Kind::Rmd { .. } | Kind::Dele { .. } => {
                self.unsettled.remove(&path);
                self.model.tree.remove(&path);
            }
            Kind::Rnfr { .. } => self.rnfr = Some(path),
            _ => {
                let from = from.as_deref().unwrap_or("/");
                self.model.rename(from, &path);
                // A failed upload's leftovers move with the rename, unsettled still.
                let below = format!("{from}/");
                let moved: Vec<String> = self
                    .unsettled
                    .keys()
                    .filter(|k| *k == from || k.starts_with(&below))
                    .cloned()
                    .collect();
                let entries: Vec<_> = moved
                    .iter()
                    .filter_map(|k| self.unsettled.remove(k).map(|u| (k.clone(), u)))
                    .collect();
                let target = format!("{path}/");
                self.unsettled
                    .retain(|k, _| *k != path && !k.starts_with(&target));
                for (k, u) in entries {
                    self.unsettled
                        .insert(format!("{path}{}", &k[from.len()..]), u);
                }
            }
        }
        Ok(())
    }

    /// POSIX rename rules, as the storage implements them; without `replace`
    /// (`allow_replace_on_rename` off), an existing target is refused.
    fn rename_ok(
        &self,
        from: &str,
        to: &str,
        dest: &Look,
        parent_dir: bool,
        replace: bool,
    ) -> bool {
        let src = self.model.look(from);
        if !parent_dir || !self.model.is_own(from) || matches!(src, Look::Missing) {
            return false;
        }
        if !replace && *dest != Look::Missing {
            return false;
        }
        if from == to {
            return true;
        }
        let src_dir = src == Look::Dir;
        if src_dir && to.starts_with(&format!("{from}/")) {
            return false;
        }
        match (src_dir, dest) {
            (_, Look::Missing) => true,
            (false, Look::File(_)) => true,
            (true, Look::Dir) => self.model.children(to).is_some_and(|c| c.is_empty()),
            _ => false,
        }
    }

    /// 522: the data connection's TLS failed, which is right only when it did not resume
    /// this control session (a TLS 1.3 client uses each ticket once).
    fn data_tls_refused(&mut self) -> Res {
        match self.data_resumed {
            Some(false) => {
                self.count("tls:522-not-resumed");
                Ok(())
            }
            other => Err(format!("522, but the data connection resumed: {other:?}")),
        }
    }

    fn check_list(
        &mut self,
        cx: &ClientCx<'_>,
        verb: ListVerb,
        path: Option<String>,
        data_ready: bool,
        prelim: bool,
        code: u16,
    ) -> Res {
        if !data_ready {
            return want(code, &[425]);
        }
        if code == 522 {
            return self.data_tls_refused();
        }
        let Some(path) = path else {
            return want(code, &[553]);
        };
        let io = cx.swarm.io_errors;
        let look = self.model.look(&path);
        let exists = matches!(look, Look::Dir | Look::File(_));
        let ok: &[u16] = match (&look, verb) {
            (Look::Unknown, _) => &[226, 425, 426, 451, 501, 550],
            (Look::File(_), ListVerb::Mlsd) => &[501],
            (_, _) if exists && prelim => XFER_END,
            (Look::Missing, _) => &[550],
            _ => &[],
        };
        if io && code == 451 {
            return Ok(());
        }
        want(code, ok)?;
        if code != 226 || !exists {
            return Ok(());
        }
        let names = match look {
            Look::File(_) => vec![path.rsplit('/').next().unwrap_or("").to_string()],
            _ => self.model.children(&path).unwrap_or_default(),
        };
        let got = String::from_utf8_lossy(&self.data_in).into_owned();
        let lines: Vec<&str> = got.split_terminator("\r\n").collect();
        if verb == ListVerb::Nlst && lines != names {
            return Err(format!("NLST gave {lines:?}, the model has {names:?}"));
        }
        if lines.len() != names.len() || !got.ends_with("\r\n") && !names.is_empty() {
            return Err(format!(
                "listing has {} lines for {names:?}: {got:?}",
                lines.len()
            ));
        }
        Ok(())
    }

    fn check_retr(
        &mut self,
        cx: &ClientCx<'_>,
        path: Option<String>,
        (data_ready, rest): (bool, u64),
        prelim: bool,
        code: u16,
    ) -> Res {
        if !data_ready {
            return want(code, &[425]);
        }
        if code == 522 {
            return self.data_tls_refused();
        }
        let Some(path) = path else {
            return want(code, &[553]);
        };
        let offset = rest as usize;
        let io = cx.swarm.io_errors;
        let look = self.model.look(&path);
        let ok: &[u16] = match &look {
            Look::Unknown => &[226, 425, 426, 451, 550],
            Look::File(_) if prelim => XFER_END,
            Look::File(_) => &[],
            _ => &[550],
        };
        if io && code == 451 {
            return Ok(());
        }
        want(code, ok)?;
        let Look::File(bytes) = look else {
            return Ok(());
        };
        if code != 226 {
            return Ok(());
        }
        let raw = &bytes[offset.min(bytes.len())..];
        let mut expected = Vec::new();
        if self.ascii {
            ToNetAscii::default().encode(raw, &mut expected);
        } else {
            expected.extend_from_slice(raw);
        }
        self.count("download:226-checked");
        match self.data_in == expected {
            true => Ok(()),
            false => Err(format!(
                "226 but received {} bytes, expected {} (offset {offset})",
                self.data_in.len(),
                expected.len()
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_store(
        &mut self,
        cx: &ClientCx<'_>,
        path: Option<String>,
        how: How,
        data: &[u8],
        (data_ready, offset): (bool, u64),
        prelim: bool,
        code: u16,
        text: &str,
    ) -> Res {
        if !data_ready {
            return want(code, &[425]);
        }
        let Some(path) = path else {
            return want(code, &[553]);
        };
        if !self.may_write(cx) {
            return want(code, &[550]);
        }
        // A refused data connection is a failed upload: what it left is judged below.
        let refused = code == 522;
        if refused {
            self.data_tls_refused()?;
        }
        let old = match self.model.look(&path) {
            Look::File(b) => Some(b),
            Look::Unknown => return Err(format!("{path}: upload outside the own directory")),
            _ => None,
        };
        let is_dir = self.model.look(&path) == Look::Dir;
        let parent_ok = self.model.look(&parent(&path)) == Look::Dir;
        let opens = parent_ok
            && match how {
                How::Stou => true,
                How::Appe => !is_dir,
                How::Stor if offset == 0 => !is_dir,
                How::Stor => old.as_ref().is_some_and(|b| b.len() as u64 >= offset),
            };
        let ok: &[u16] = match (opens, prelim) {
            (true, true) => XFER_END,
            (true, false) => &[],
            (false, _) if how == How::Stor && offset > 0 && parent_ok && !is_dir => &[451],
            (false, _) => &[550],
        };
        let excused = cx.swarm.io_errors && code == 451 || refused && opens && prelim;
        if !excused {
            want(code, ok)?;
        }
        let mut body = Vec::new();
        if self.ascii {
            let mut dec = FromNetAscii::default();
            dec.decode(data, &mut body);
            dec.finish(&mut body);
        } else {
            body.extend_from_slice(data);
        }
        let final_path = match how {
            How::Stou if code == 226 => {
                let name = text.rsplit("unique file name: ").next().unwrap_or("");
                let name = name.strip_suffix(").").ok_or("STOU 226 without the name")?;
                format!("{}/{name}", parent(&path))
            }
            _ => path.clone(),
        };
        let stored = cx.storage.read_file(&final_path);
        let old = if how == How::Stou && code == 226 {
            None
        } else {
            old
        };
        let expected = stored_upload(how, offset, old.as_deref(), &body);
        self.count(if code == 226 {
            "upload:226-checked"
        } else {
            "upload:failed-checked"
        });
        let limit = cx.cfg.filtering.max_upload_size;
        if code == 226 && limit.is_some_and(|max| data.len() as u64 > max) {
            return Err(format!(
                "226 for {} bytes over the {limit:?} limit",
                data.len()
            ));
        }
        if code == 552 {
            self.count("upload:552-checked");
        }
        let result = if code == 226 {
            match stored.as_deref() == Some(&expected[..]) {
                true => Ok(()),
                false => Err(format!(
                    "226 but {final_path} holds {:?} bytes, expected {}",
                    stored.map(|s| s.len()),
                    expected.len()
                )),
            }
        } else {
            self.failed_upload(
                cx,
                how,
                offset,
                old.as_deref(),
                &body,
                stored.as_deref(),
                &final_path,
            )
        };
        if code == 226 {
            self.unsettled.remove(&final_path);
        } else if how != How::Stou {
            // The failure left what it left; no reply vouches for it being on disk.
            let before = self.model.tree.get(&path).cloned();
            let now = cx
                .storage
                .exists(&path)
                .then(|| cx.storage.read_file(&path));
            if now != before || self.unsettled.contains_key(&path) {
                let u = self
                    .unsettled
                    .entry(path.clone())
                    .or_insert(super::client::Unsettled {
                        baseline: before,
                        failed: Vec::new(),
                    });
                u.failed.push((how, offset, body.clone()));
            }
        }
        self.model.resync(cx.storage);
        result
    }

    /// An upload that did not get 226: nothing at the final name but the old file, or
    /// (kept partial uploads, in-place writes) the old file with a prefix of the new bytes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn failed_upload(
        &self,
        cx: &ClientCx<'_>,
        how: How,
        offset: u64,
        old: Option<&[u8]>,
        body: &[u8],
        stored: Option<&[u8]>,
        path: &str,
    ) -> Res {
        if stored == old || how == How::Stou {
            return Ok(());
        }
        let stored = stored.unwrap_or(&[]);
        let in_place = how == How::Appe || (how == How::Stor && offset > 0);
        let start = match how {
            How::Appe => old.map_or(0, <[u8]>::len),
            _ => offset as usize,
        };
        let prefix_ok = |k: usize| match in_place {
            true => splice(old.unwrap_or(&[]), start, &body[..k]) == stored,
            false => body[..k] == *stored,
        };
        let partial_ok =
            (in_place || cx.cfg.keep_partial_uploads) && (0..=body.len()).any(prefix_ok);
        match partial_ok {
            true => Ok(()),
            false => Err(format!(
                "failed upload left {} bytes at {path} (old: {:?}, keep_partial: {})",
                stored.len(),
                old.map(<[u8]>::len),
                cx.cfg.keep_partial_uploads
            )),
        }
    }
}

/// What a successful upload leaves at its name: the body (STOR), the old file with the
/// body written from `offset` (REST + STOR) or after it (APPE).
pub(super) fn stored_upload(how: How, offset: u64, old: Option<&[u8]>, body: &[u8]) -> Vec<u8> {
    match how {
        How::Stor if offset > 0 => splice(old.unwrap_or(&[]), offset as usize, body),
        How::Appe => [old.unwrap_or(&[]), body].concat(),
        _ => body.to_vec(),
    }
}

/// `old` overwritten from `at` with `new` (the tail beyond stays, as with pwrite).
fn splice(old: &[u8], at: usize, new: &[u8]) -> Vec<u8> {
    let mut out = old.to_vec();
    if out.len() < at + new.len() {
        out.resize(at + new.len(), 0);
    }
    out[at..at + new.len()].copy_from_slice(new);
    out
}
