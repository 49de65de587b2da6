//! What a session needs to know about its site. Built once by the server and shared by
//! every session (behind an `Arc`).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Timeouts, with IIS's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Before login completes (IIS `unauthenticatedTimeout`, 30 s).
    pub login: Duration,
    /// Idle control channel after login (IIS `controlChannelTimeout`, 120 s).
    pub idle: Duration,
    /// Waiting for a data connection to be made (IIS `dataChannelTimeout`, 30 s).
    pub data_connect: Duration,
    /// A transfer that makes no progress for this long is dropped (30 s).
    pub transfer_stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            login: Duration::from_secs(30),
            idle: Duration::from_secs(120),
            data_connect: Duration::from_secs(30),
            transfer_stall: Duration::from_secs(30),
        }
    }
}

/// The directory listing format of LIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListingStyle {
    /// `-rw-r--r-- 1 owner group 1234 Jan 01 12:00 name`, what nearly every client parses.
    #[default]
    Unix,
    /// `10-02-23  11:21PM       <DIR>          name`, IIS's default.
    MsDos,
}

/// Per-site session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The site's name, for logs.
    pub site_name: String,
    /// The first line of the 220 greeting.
    pub banner: String,
    /// Whether `anonymous`/`ftp` may log in (any password).
    pub allow_anonymous: bool,
    /// Whether anonymous users may change anything (upload, delete, rename, mkdir).
    pub anonymous_write: bool,
    /// Whether logged-in (non-anonymous) users may change anything.
    pub user_write: bool,
    pub timeouts: Timeouts,
    /// Passive ports to listen on; `0..=0` lets the OS pick.
    pub passive_ports: RangeInclusive<u16>,
    /// The address advertised in 227 replies instead of the control connection's local one.
    pub external_ip: Option<Ipv4Addr>,
    /// Lines longer than this are refused with 500 (IIS `maxCommandLine`, 4096).
    pub max_line: usize,
    /// Whether PORT/EPRT targets must be the control peer's address (IIS
    /// `matchClientAddressForPort`); a port below 1024 is always refused.
    pub match_port_peer: bool,
    /// Whether passive data connections must come from the control peer's address.
    pub match_pasv_peer: bool,
    pub listing_style: ListingStyle,
    /// Whether a failed upload's partial file is kept (IIS `keepPartialUploads`, off).
    pub keep_partial_uploads: bool,
    /// Bytes of outgoing control replies buffered before the session stops reading.
    pub max_pending_output: usize,
    /// FTPS: certificates and policy. `None`: the site offers no TLS.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Request filtering: extensions, hidden segments, denied sequences, commands,
    /// path length, upload size.
    pub filtering: crate::policy::RequestFiltering,
    /// The site's IP rules, checked at accept after the server's.
    pub ip_rules: crate::policy::IpRules,
    /// Minimum data rate and bandwidth.
    pub limits: crate::policy::SiteLimits,
    /// The activity log; `None`: the site logs nothing (and pays nothing for it).
    pub logging: Option<crate::log::LogConfig>,
    /// Whether RNTO may replace an existing file (IIS `allowReplaceOnRename`, off).
    pub allow_replace_on_rename: bool,
    /// Whether a file being written in place (APPE, REST+STOR) may be downloaded
    /// meanwhile (IIS `allowReadUploadsInProgress`, off). STOR and STOU write under a
    /// temporary name, so their files are never read half-written either way.
    pub allow_read_uploads_in_progress: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            site_name: "default".into(),
            banner: "wharf FTP server ready".into(),
            allow_anonymous: false,
            anonymous_write: false,
            user_write: true,
            timeouts: Timeouts::default(),
            passive_ports: 0..=0,
            external_ip: None,
            max_line: 4096,
            match_port_peer: true,
            match_pasv_peer: true,
            listing_style: ListingStyle::Unix,
            keep_partial_uploads: false,
            max_pending_output: 64 * 1024,
            tls: None,
            filtering: crate::policy::RequestFiltering::default(),
            ip_rules: crate::policy::IpRules::default(),
            limits: crate::policy::SiteLimits::default(),
            logging: None,
            allow_replace_on_rename: false,
            allow_read_uploads_in_progress: false,
        }
    }
}
