//! Sites, bindings and the paths a user sees.
//!
//! A server carries one [`Sites`] table: every site's [`SessionConfig`] and the
//! bindings `ip:port:host` that route connections to them. The local address a
//! connection arrived on selects the bindings that apply (an exact address beats a
//! wildcard one); among those, the blank-host binding's site answers until `HOST`, a
//! `USER host|user` or the TLS SNI name chooses another.
//!
//! # Three namespaces
//!
//! - the **shown** path: what the client names and `PWD` prints, always inside the user's
//!   own `/`;
//! - the **site** path: where that is in the site (the user's home below the site root,
//!   or a global virtual directory); authorization rules are written against it;
//! - the **storage** path: what the [`crate::Storage`] is asked for, below the site's (or
//!   the virtual directory's) `storage_root`.
//!
//! [`map_path`] is the one function that goes from the first to the other two. A shown
//! path is normalised (no `..`), and the site path is the shown path placed under the
//! home, so a jailed user can never name anything outside the jail.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::backend::Principal;
use crate::config::SessionConfig;
use crate::path::VPath;
pub use crate::policy::IpNet;

/// The IIS user isolation modes (`userIsolation@mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Everyone starts at the site root and may go anywhere the rules allow.
    #[default]
    None,
    /// Start in `/<user>` (anonymous: `/default`) if it exists, else at the root; the
    /// whole site stays reachable.
    StartInUsersDirectory,
    /// Jailed to the home (`/LocalUser/<user>`, `/LocalUser/Public` for anonymous,
    /// `/<domain>/<user>` for `domain\user`); global virtual directories stay visible.
    IsolateRootDirectoryOnly,
    /// Jailed to the home; global virtual directories are hidden.
    IsolateAllDirectories,
    /// IIS's "FTP home directory configured in Active Directory": jailed to the home the
    /// account store assigns ([`Principal::home`]: `msIIS-FTPRoot` + `msIIS-FTPDir`);
    /// a user without one, and anonymous users, are refused. Global virtual
    /// directories are hidden.
    ActiveDirectory,
}

impl Isolation {
    /// Whether global virtual directories are visible in this mode.
    pub fn shows_virtual_dirs(self) -> bool {
        !matches!(
            self,
            Isolation::IsolateAllDirectories | Isolation::ActiveDirectory
        )
    }

    /// Whether the user is confined to the home directory.
    pub fn jails(self) -> bool {
        matches!(
            self,
            Isolation::IsolateRootDirectoryOnly
                | Isolation::IsolateAllDirectories
                | Isolation::ActiveDirectory
        )
    }
}

/// A global virtual directory: `/<name>` in the site is `storage_root` in the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualDir {
    /// One path segment (matched case-insensitively).
    pub name: String,
    pub storage_root: VPath,
}

/// Which address a `227` reply advertises to clients from `network`: `ip`, or with
/// `None` the address the client connected to (for clients on the private side of NAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasvAddress {
    pub network: IpNet,
    pub ip: Option<Ipv4Addr>,
}

/// One binding: connections to `ip:port` asking for `host` go to site `site`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// An unspecified address (`0.0.0.0`, `::`) matches every local address of its
    /// family.
    pub ip: IpAddr,
    /// `0` matches every port (the single-site server; configured port-0 listeners are
    /// resolved to their real ports before the table is built).
    pub port: u16,
    /// `None`: the blank-host binding, answering connections that name no host.
    /// Compared case-insensitively.
    pub host: Option<String>,
    /// An index into the site list.
    pub site: usize,
    /// TLS from the first byte (implicit FTPS).
    pub implicit_tls: bool,
}

impl Binding {
    fn same_address(&self, other: &Binding) -> bool {
        self.ip == other.ip && self.port == other.port
    }

    /// Whether one connection can match both (same port; same address, or one is the
    /// other's family wildcard).
    fn overlaps(&self, other: &Binding) -> bool {
        let (a, b) = (self.ip.to_canonical(), other.ip.to_canonical());
        (self.port == other.port || self.port == 0 || other.port == 0)
            && (a == b
                || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified())))
    }

    /// How well this binding matches a local address: 2 exact, 1 wildcard, 0 not at all.
    fn rank(&self, local: SocketAddr) -> u8 {
        if self.port != 0 && self.port != local.port() {
            return 0;
        }
        let lip = local.ip().to_canonical();
        let ip = self.ip.to_canonical();
        if ip == lip {
            2
        } else if ip.is_unspecified() && ip.is_ipv4() == lip.is_ipv4() {
            1
        } else {
            0
        }
    }

    fn host_is(&self, name: &str) -> bool {
        self.host
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(name))
    }
}

/// Why a table of sites and bindings cannot be built. Indices are into the bindings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SitesError {
    #[error("there are no sites")]
    NoSites,
    #[error("binding {binding} names site {site}, which does not exist")]
    NoSuchSite { binding: usize, site: usize },
    #[error("two sites answer {addr} without a host name ({first} and {second}): give one of them a host name")]
    AmbiguousDefault {
        binding: usize,
        other: usize,
        addr: String,
        first: String,
        second: String,
    },
    #[error("host name {host:?} is bound twice on {addr} ({first} and {second})")]
    DuplicateHost {
        binding: usize,
        other: usize,
        addr: String,
        host: String,
        first: String,
        second: String,
    },
    #[error("{addr} is bound both with and without implicit TLS; a port is one or the other")]
    MixedTls {
        binding: usize,
        other: usize,
        addr: String,
    },
}

/// What a listener address offers: the site that answers without a host name, if any,
/// and the site whose settings apply before one is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// The blank-host binding's site.
    pub default: Option<usize>,
    /// The site whose protocol settings (timeouts, TLS, line limits) apply until a site
    /// is chosen: `default`, or else the first site bound here.
    pub fallback: usize,
    /// Whether connections here start with TLS.
    pub implicit_tls: bool,
    /// Whether any binding here has a host name (virtual hosts are in use).
    pub named: bool,
}

/// Every site and binding of a server.
#[derive(Debug, Clone)]
pub struct Sites {
    sites: Vec<Arc<SessionConfig>>,
    bindings: Vec<Binding>,
}

impl Sites {
    /// Checks and builds the table: every binding names a site; on one `ip:port` at most
    /// one binding has a blank host, host names are unique, and implicit TLS agrees.
    pub fn new(
        sites: Vec<Arc<SessionConfig>>,
        bindings: Vec<Binding>,
    ) -> Result<Sites, SitesError> {
        if sites.is_empty() {
            return Err(SitesError::NoSites);
        }
        let name = |b: &Binding| sites[b.site].site_name.clone();
        for (i, b) in bindings.iter().enumerate() {
            if b.site >= sites.len() {
                return Err(SitesError::NoSuchSite {
                    binding: i,
                    site: b.site,
                });
            }
        }
        for (i, b) in bindings.iter().enumerate() {
            for (j, earlier) in bindings[..i].iter().enumerate() {
                let addr = SocketAddr::new(b.ip, b.port).to_string();
                if b.overlaps(earlier) && b.implicit_tls != earlier.implicit_tls {
                    return Err(SitesError::MixedTls {
                        binding: i,
                        other: j,
                        addr,
                    });
                }
                if !b.same_address(earlier) {
                    continue;
                }
                match (&b.host, &earlier.host) {
                    (None, None) => {
                        return Err(SitesError::AmbiguousDefault {
                            binding: i,
                            other: j,
                            addr,
                            first: name(earlier),
                            second: name(b),
                        })
                    }
                    (Some(h), Some(e)) if h.eq_ignore_ascii_case(e) => {
                        return Err(SitesError::DuplicateHost {
                            binding: i,
                            other: j,
                            addr,
                            host: h.clone(),
                            first: name(earlier),
                            second: name(b),
                        })
                    }
                    _ => {}
                }
            }
        }
        Ok(Sites { sites, bindings })
    }

    /// One site that answers every connection on every address and port, with any
    /// host name: what [`crate::Server::new`] serves (plain FTP; explicit FTPS when the
    /// site has TLS).
    pub fn single(config: Arc<SessionConfig>) -> Sites {
        let any = |ip: IpAddr| Binding {
            ip,
            port: 0,
            host: None,
            site: 0,
            implicit_tls: false,
        };
        Sites {
            sites: vec![config],
            bindings: vec![
                any(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                any(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
            ],
        }
    }

    pub fn site(&self, i: usize) -> &Arc<SessionConfig> {
        &self.sites[i]
    }

    pub fn sites(&self) -> &[Arc<SessionConfig>] {
        &self.sites
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The first binding for `local` that `pred` accepts: bindings on the exact
    /// address first, then the wildcard ones (IIS order: `ip:port:host`, `*:port:host`,
    /// `ip:port:`, `*:port:`).
    fn find(&self, local: SocketAddr, pred: impl Fn(&Binding) -> bool) -> Option<&Binding> {
        [2, 1].into_iter().find_map(|rank| {
            self.bindings
                .iter()
                .find(|b| b.rank(local) == rank && pred(b))
        })
    }

    /// What a connection arriving on `local` is offered; `None` if no site is bound
    /// there.
    pub fn listener(&self, local: SocketAddr) -> Option<Listener> {
        let first = self.find(local, |_| true)?;
        let default = self.find(local, |b| b.host.is_none()).map(|b| b.site);
        Some(Listener {
            default,
            fallback: default.unwrap_or(first.site),
            implicit_tls: first.implicit_tls,
            named: self.find(local, |b| b.host.is_some()).is_some(),
        })
    }

    /// Every site bound to `local`, whichever host name it answers to (a site bound
    /// twice there comes twice).
    pub fn sites_at(&self, local: SocketAddr) -> impl Iterator<Item = &Arc<SessionConfig>> {
        self.bindings
            .iter()
            .filter(move |b| b.rank(local) > 0)
            .map(|b| &self.sites[b.site])
    }

    /// The site bound to `host` for connections on `local` (RFC 7151 `HOST`, IIS
    /// `host|user`). On an address without virtual hosts, any name selects the
    /// blank-host site.
    pub fn by_host(&self, local: SocketAddr, host: &str) -> Option<usize> {
        let listener = self.listener(local)?;
        if !listener.named {
            return listener.default;
        }
        self.find(local, |b| b.host_is(host)).map(|b| b.site)
    }

    /// The site a TLS client asked for by SNI: the same lookup as `HOST`.
    pub fn by_sni(&self, local: SocketAddr, server_name: &str) -> Option<usize> {
        self.by_host(local, server_name)
    }
}

/// Whether `name` can be one path segment: not empty, `.` or `..`, and without `/`,
/// `\` or NUL.
pub fn is_plain_segment(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Where a user's home is, by isolation mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// The site path of the home directory.
    pub path: VPath,
    /// Jailed modes refuse the login when it is missing; `StartInUsersDirectory` starts
    /// at the root instead.
    pub required: bool,
}

/// A user name that cannot name a home directory (`..`, `a/b`, `dom\`), or a user
/// without the home the isolation mode needs from the account store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user {0:?} has no usable home directory")]
pub struct BadHomeName(pub String);

/// The home directory `who` gets under `mode`: `Ok(None)` when the mode has none, `Err`
/// when the user name cannot name a directory, or the mode needs a home from the
/// account store and `who` has none (the login is refused).
///
/// A home from the account store ([`Principal::home`]) is where
/// `StartInUsersDirectory` starts and what `ActiveDirectory` jails to; the other modes
/// go by the name alone, as IIS does.
pub fn home_for(mode: Isolation, who: &Principal) -> Result<Option<Home>, BadHomeName> {
    let path = |segs: &[&str]| -> Result<VPath, BadHomeName> {
        let bad = || BadHomeName(who.name.clone());
        if !segs.iter().all(|s| is_plain_segment(s)) {
            return Err(bad());
        }
        VPath::root().resolve(&segs.join("/")).map_err(|_| bad())
    };
    let (domain, user) = match who.name.split_once('\\') {
        Some((d, u)) if !who.anonymous => (Some(d), u),
        _ => (None, who.name.as_str()),
    };
    match mode {
        Isolation::None => Ok(None),
        Isolation::ActiveDirectory => match (&who.home, who.anonymous) {
            (Some(home), false) => Ok(Some(Home {
                path: home.clone(),
                required: true,
            })),
            _ => Err(BadHomeName(who.name.clone())),
        },
        Isolation::StartInUsersDirectory if who.home.is_some() && !who.anonymous => {
            Ok(who.home.clone().map(|path| Home {
                path,
                required: false,
            }))
        }
        Isolation::StartInUsersDirectory => {
            let name = if who.anonymous { "default" } else { user };
            let segs: Vec<&str> = domain.into_iter().chain([name]).collect();
            Ok(Some(Home {
                path: path(&segs)?,
                required: false,
            }))
        }
        Isolation::IsolateRootDirectoryOnly | Isolation::IsolateAllDirectories => {
            let segs: Vec<&str> = match (who.anonymous, domain) {
                (true, _) => vec!["LocalUser", "Public"],
                (false, Some(d)) => vec![d, user],
                (false, None) => vec!["LocalUser", user],
            };
            Ok(Some(Home {
                path: path(&segs)?,
                required: true,
            }))
        }
    }
}

/// Case-insensitive name equality, the way rules and virtual directories compare.
pub fn same_name(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// Where a logged-in user stands: the site path of their `/`, and whether global virtual
/// directories appear at their `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub root: VPath,
    pub virtual_dirs: bool,
}

impl Default for View {
    fn default() -> View {
        View {
            root: VPath::root(),
            virtual_dirs: true,
        }
    }
}

/// The site path and the storage path of a shown path (see the module docs).
pub fn map_path(site: &SessionConfig, view: &View, shown: &VPath) -> (VPath, VPath) {
    if view.virtual_dirs {
        if let Some((vdir, name)) = shown.segments().next().and_then(|first| {
            let vdir = site
                .virtual_dirs
                .iter()
                .find(|v| same_name(&v.name, first))?;
            Some((vdir, VPath::root().child(&vdir.name)?))
        }) {
            let rest = shown.without_first();
            return (rest.under(&name), rest.under(&vdir.storage_root));
        }
    }
    let site_path = shown.under(&view.root);
    let storage = site_path.under(&site.storage_root);
    (site_path, storage)
}

#[cfg(test)]
#[path = "site_tests.rs"]
mod tests;
