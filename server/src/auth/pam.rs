//! Local accounts through PAM (`[auth.pam]`): the system's users, checked by the PAM
//! service `wharf` (`/etc/pam.d/wharf`, see `deploy/pam.d/wharf`), as vsftpd and
//! ProFTPD do.
//!
//! A login goes through `pam_authenticate` (the password) and `pam_acct_mgmt` (expired
//! or locked accounts, expired passwords), after checks of wharf's own on the passwd
//! entry: system accounts below `min_uid` and accounts whose shell is in
//! `refuse_shells` (`nologin`, `false`) are refused. The user's Unix groups
//! (`getgrouplist`) become its groups for authorization rules; with `home_base`, its
//! passwd home below that directory becomes its home (the start folder under
//! `start_in_users_directory`, the jail under `active_directory`).
//!
//! Each check runs on a thread of its own, which the calling worker waits for at most
//! `timeout`: a PAM module that hangs (a network module, a stuck `nscd`) costs that login
//! a `530` saying the service is unavailable, and keeps neither a worker nor, through
//! the core's login timer, the session waiting longer. At most `max_concurrent` checks
//! run at once; beyond that a login is refused as unavailable rather than queued.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nonstick::{
    AuthnFlags, ConversationAdapter, ErrorCode, Result as PamResult, Transaction,
    TransactionBuilder,
};
use wharf_core::{Principal, VPath};

use super::{plausible_login, Provider, Verdict};

/// The shells that mean "no login here", refused by default.
pub const NOLOGIN_SHELLS: [&str; 4] = [
    "/usr/sbin/nologin",
    "/sbin/nologin",
    "/bin/false",
    "/usr/bin/false",
];

/// `[auth.pam]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PamConfig {
    /// The PAM service name: `/etc/pam.d/<service>` (default `wharf`).
    pub service: String,
    /// Accounts whose login shell is one of these are refused (default:
    /// [`NOLOGIN_SHELLS`]; empty: any shell).
    pub refuse_shells: Vec<String>,
    /// Accounts with a lower uid are refused (default 1000: no root, no system accounts).
    pub min_uid: u32,
    /// The user's Unix groups as its groups in rules (default true).
    pub groups: bool,
    /// With a directory, a passwd home below it is the user's home, as a site path
    /// (`/home` and `/home/alice`: `/alice`).
    pub home_base: Option<PathBuf>,
    /// How long one check may take (default 10 s).
    pub timeout: Duration,
    /// Checks in progress at once (default 32).
    pub max_concurrent: usize,
}

impl Default for PamConfig {
    fn default() -> PamConfig {
        PamConfig {
            service: "wharf".into(),
            refuse_shells: NOLOGIN_SHELLS.iter().map(|s| s.to_string()).collect(),
            min_uid: 1000,
            groups: true,
            home_base: None,
            timeout: Duration::from_secs(10),
            max_concurrent: 32,
        }
    }
}

/// The PAM provider.
pub struct PamProvider {
    cfg: Arc<PamConfig>,
    running: Arc<AtomicUsize>,
}

impl PamProvider {
    pub fn new(cfg: PamConfig) -> PamProvider {
        PamProvider {
            cfg: Arc::new(cfg),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// One passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub home: PathBuf,
    pub shell: String,
}

/// Looks `name` up in the system's user database (NSS): `Ok(None)` when there is no
/// such user, `Err` when the lookup itself failed.
pub fn lookup(name: &str) -> Result<Option<Passwd>, String> {
    let Ok(c) = CString::new(name) else {
        return Ok(None);
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid value to be overwritten by getpwnam_r.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, `buf` outlives it, and `found`
        // is only read when the call set it.
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        // ENOENT, ESRCH, EBADF, EPERM: "not found" for some NSS modules.
        if found.is_null()
            && matches!(
                rc,
                0 | libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM
            )
        {
            return Ok(None);
        }
        if rc != 0 {
            return Err(format!(
                "looking up {name:?} in the user database: {}",
                io::Error::from_raw_os_error(rc)
            ));
        }
        // SAFETY: getpwnam_r set these to NUL-terminated strings inside `buf`.
        let text = |p: *const libc::c_char| -> String {
            if p.is_null() {
                return String::new();
            }
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        return Ok(Some(Passwd {
            name: text(pw.pw_name),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            home: PathBuf::from(text(pw.pw_dir)),
            shell: text(pw.pw_shell),
        }));
    }
}

/// The names of every group `user` is in (its primary group `gid` first).
pub fn group_names(user: &str, gid: libc::gid_t) -> Vec<String> {
    let Ok(c) = CString::new(user) else {
        return Vec::new();
    };
    let mut n: libc::c_int = 32;
    let mut gids: Vec<libc::gid_t> = Vec::new();
    for _ in 0..8 {
        gids.resize(n.max(1) as usize, 0);
        let mut count = gids.len() as libc::c_int;
        // SAFETY: `gids` has room for `count` entries; getgrouplist writes at most that
        // many and sets `count` to how many there are.
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, gids.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            gids.truncate(count.max(0) as usize);
            break;
        }
        n = count.max(n * 2);
    }
    let mut names: Vec<String> = Vec::with_capacity(gids.len());
    for g in gids {
        if let Some(name) = group_name(g) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

fn group_name(gid: libc::gid_t) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: as in `lookup`, for getgrgid_r.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in `lookup`.
        let rc = unsafe {
            libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut found)
        };
        if rc == libc::ERANGE && buf.len() < 1 << 22 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || found.is_null() || gr.gr_name.is_null() {
            return None;
        }
        // SAFETY: getgrgid_r set gr_name to a NUL-terminated string inside `buf`.
        return Some(
            unsafe { CStr::from_ptr(gr.gr_name) }
                .to_string_lossy()
                .into_owned(),
        );
    }
}

/// `home` below `base`, as a site path (`/home`, `/home/alice/ftp`: `/alice/ftp`);
/// `None` when it is not below it or has a part that cannot be a folder name.
pub fn home_below(base: &Path, home: &Path) -> Option<VPath> {
    let rest = home.strip_prefix(base).ok()?;
    let mut path = VPath::root();
    for part in rest.components() {
        let std::path::Component::Normal(seg) = part else {
            return None;
        };
        path = path.child(seg.to_str()?)?;
    }
    Some(path)
}

/// Answers PAM's prompts with the login's name and password; messages go to the log.
struct Conv {
    user: String,
    password: String,
}

impl ConversationAdapter for Conv {
    fn prompt(&self, _request: impl AsRef<OsStr>) -> PamResult<OsString> {
        Ok(OsString::from(&self.user))
    }

    fn masked_prompt(&self, _request: impl AsRef<OsStr>) -> PamResult<OsString> {
        Ok(OsString::from(&self.password))
    }

    fn error_msg(&self, message: impl AsRef<OsStr>) {
        tracing::debug!(user = ?self.user, message = ?message.as_ref(), "PAM error message");
    }

    fn info_msg(&self, message: impl AsRef<OsStr>) {
        tracing::debug!(user = ?self.user, message = ?message.as_ref(), "PAM message");
    }
}

/// What PAM said: `Ok(Ok(()))` yes, `Ok(Err(reason))` no, `Err` it failed.
type PamOutcome = Result<Result<(), String>, String>;

/// A refusal of the user's credentials or account, rather than a failure of PAM.
fn refusal(step: &str, e: ErrorCode) -> PamOutcome {
    let reason = match e {
        ErrorCode::AuthenticationError => "wrong password or locked account".to_string(),
        ErrorCode::UserUnknown => "unknown to PAM".to_string(),
        ErrorCode::AccountExpired => "account expired".to_string(),
        ErrorCode::NewAuthTokRequired | ErrorCode::AuthTokExpired => {
            "password expired (must be changed)".to_string()
        }
        ErrorCode::PermissionDenied => "permission denied by the PAM policy".to_string(),
        ErrorCode::MaxTries => "too many tries".to_string(),
        ErrorCode::CredentialsInsufficient => "credentials insufficient".to_string(),
        other => return Err(format!("{step}: {other}")),
    };
    Ok(Err(format!("{step}: {reason}")))
}

fn run_pam(service: &str, user: &str, password: &str, rhost: &str) -> PamOutcome {
    let conv = Conv {
        user: user.to_string(),
        password: password.to_string(),
    };
    let mut txn = TransactionBuilder::new_with_service(service)
        .username(user)
        .build(conv.into_conversation())
        .map_err(|e| format!("pam_start for service {service:?}: {e}"))?;
    {
        use nonstick::items::ItemsMut;
        use nonstick::PamShared;
        let mut items = txn.items_mut();
        let _ = items.set_remote_host(Some(OsStr::new(rhost)));
        let _ = items.set_tty_name(Some(OsStr::new("wharf")));
    }
    let flags = AuthnFlags::SILENT | AuthnFlags::DISALLOW_NULL_AUTHTOK;
    if let Err(e) = txn.authenticate(flags) {
        return refusal("pam_authenticate", e);
    }
    if let Err(e) = txn.account_management(flags) {
        return refusal("pam_acct_mgmt", e);
    }
    Ok(Ok(()))
}

/// Takes one of `max` places; gives it back when dropped (on every path out of the
/// check thread, panics included).
struct Place(Arc<AtomicUsize>);

impl Place {
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Place> {
        let mut n = counter.load(Ordering::Relaxed);
        loop {
            if n >= max {
                return None;
            }
            match counter.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Place(counter.clone())),
                Err(now) => n = now,
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Provider for PamProvider {
    fn kind(&self) -> &'static str {
        "pam"
    }

    fn check(&self, login: &str, password: &str, peer: SocketAddr) -> Result<Verdict, String> {
        if !plausible_login(login) {
            return Ok(Verdict::Unknown);
        }
        let Some(pw) = lookup(login)? else {
            return Ok(Verdict::Unknown);
        };
        let cfg = &self.cfg;
        if pw.uid < cfg.min_uid {
            return Ok(Verdict::Refused(format!(
                "uid {} is below min_uid ({})",
                pw.uid, cfg.min_uid
            )));
        }
        if cfg.refuse_shells.contains(&pw.shell) {
            return Ok(Verdict::Refused(format!(
                "login shell {} is refused",
                pw.shell
            )));
        }
        if password.is_empty() {
            return Ok(Verdict::Refused("empty password".into()));
        }
        let Some(place) = Place::take(&self.running, cfg.max_concurrent) else {
            return Err(format!(
                "{} PAM checks are already in progress (max_concurrent)",
                cfg.max_concurrent
            ));
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let (service, user, pass) = (cfg.service.clone(), pw.name.clone(), password.to_string());
        let rhost = peer.ip().to_canonical().to_string();
        std::thread::Builder::new()
            .name("wharf-pam".into())
            .spawn(move || {
                let _place = place;
                let _ = tx.send(run_pam(&service, &user, &pass, &rhost));
            })
            .map_err(|e| format!("starting a PAM thread: {e}"))?;
        let outcome = match rx.recv_timeout(cfg.timeout) {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "PAM service {:?} did not answer within {} s",
                    cfg.service,
                    cfg.timeout.as_secs_f64()
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the PAM check ended without an answer".into())
            }
        };
        match outcome? {
            Err(reason) => Ok(Verdict::Refused(reason)),
            Ok(()) => {
                let groups = match cfg.groups {
                    true => group_names(&pw.name, pw.gid),
                    false => Vec::new(),
                };
                let home = cfg
                    .home_base
                    .as_deref()
                    .and_then(|b| home_below(b, &pw.home));
                Ok(Verdict::Accepted(Principal {
                    home,
                    ..Principal::user(pw.name, groups)
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_groups_of_root() {
        let root = lookup("root").unwrap().expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(group_names("root", 0).contains(&"root".to_string()));
        assert_eq!(lookup("no-such-user-wharf").unwrap(), None);
        assert_eq!(lookup("nul\0name").unwrap(), None);
    }

    #[test]
    fn homes_below_the_base() {
        let base = Path::new("/home");
        assert_eq!(
            home_below(base, Path::new("/home/alice")),
            VPath::root().child("alice")
        );
        assert_eq!(home_below(base, Path::new("/home")), Some(VPath::root()));
        assert_eq!(home_below(base, Path::new("/srv/alice")), None);
        assert_eq!(home_below(base, Path::new("/home/../etc")), None);
        assert_eq!(home_below(base, Path::new("/homer/x")), None);
    }

    #[test]
    fn root_and_system_accounts_are_refused_before_pam() {
        let p = PamProvider::new(PamConfig::default());
        let peer = "127.0.0.1:1".parse().unwrap();
        match p.check("root", "whatever", peer) {
            Ok(Verdict::Refused(why)) => assert!(why.contains("min_uid"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.check("no-such-user-wharf", "x", peer),
            Ok(Verdict::Unknown)
        );
        assert_eq!(p.check("a\0b", "x", peer), Ok(Verdict::Unknown));
        assert_eq!(p.check(&"a".repeat(300), "x", peer), Ok(Verdict::Unknown));
    }

    #[test]
    fn places_are_bounded_and_given_back() {
        let c = Arc::new(AtomicUsize::new(0));
        let a = Place::take(&c, 2).unwrap();
        let b = Place::take(&c, 2).unwrap();
        assert!(Place::take(&c, 2).is_none());
        drop(a);
        assert!(Place::take(&c, 2).is_some());
        drop(b);
        assert_eq!(c.load(Ordering::SeqCst), 0);
    }
}
