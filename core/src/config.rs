//! What a session needs to know about its site. Built once by the server and shared by
//! every session (behind an `Arc`).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::authz::Rules;
use crate::path::VPath;
use crate::site::{Isolation, PasvAddress, VirtualDir};

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
    /// A control-channel TLS handshake (after AUTH TLS, or on an implicit binding) that
    /// has not completed by then closes the connection (10 s).
    pub tls_handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            login: Duration::from_secs(30),
            idle: Duration::from_secs(120),
            data_connect: Duration::from_secs(30),
            transfer_stall: Duration::from_secs(30),
            tls_handshake: Duration::from_secs(10),
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

/// The source port of active-mode (PORT/EPRT) data connections.
///
/// RFC 959 has the server connect from its control port minus one (`L-1`, port 20 for a
/// server on 21), and the firewall rules written from that era allow exactly that
/// outbound (IIS and vsftpd's `connect_from_port_20` do it). Any port is what most
/// servers do today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActiveSourcePort {
    /// Any port the system picks (`active_source_port = 0`).
    #[default]
    Any,
    /// This port (`active_source_port = 20`).
    Port(u16),
    /// The port of the control connection's local address, minus one
    /// (`active_source_port = "control-1"`): 20 for 21, 989 for 990, 2120 for 2121.
    ControlMinusOne,
}

impl ActiveSourcePort {
    /// The port to connect from for a control connection that reached `control_port`
    /// (0: any).
    pub fn for_control_port(self, control_port: u16) -> u16 {
        match self {
            ActiveSourcePort::Any => 0,
            ActiveSourcePort::Port(p) => p,
            ActiveSourcePort::ControlMinusOne => control_port.saturating_sub(1),
        }
    }
}

/// Texts a site says at fixed moments (IIS `messages`). `None` keeps wharf's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Messages {
    /// Lines sent before the final line of the 230 reply after login (IIS
    /// `greetingMessage`).
    pub welcome: Option<String>,
    /// The 221 text on QUIT (IIS `exitMessage`).
    pub exit: Option<String>,
    /// The 421 text when the server is full (IIS `maxClientsMessage`).
    pub max_clients: Option<String>,
}

/// Per-site session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The site's name, for logs.
    pub site_name: String,
    /// The 220 greeting; several lines (`\n`) make a multi-line reply.
    pub banner: String,
    /// Welcome, exit and max-clients texts.
    pub messages: Messages,
    /// Whether `anonymous`/`ftp` may log in (any password).
    pub allow_anonymous: bool,
    /// Without `rules`: whether anonymous users may change anything (upload, delete,
    /// rename, mkdir).
    pub anonymous_write: bool,
    /// Without `rules`: whether logged-in (non-anonymous) users may change anything.
    pub user_write: bool,
    /// IIS authorization rules, evaluated against site paths. `None`: everyone may read
    /// and `anonymous_write` / `user_write` decide writes. `Some` (even empty): only
    /// the rules count, and what no rule allows is denied.
    pub rules: Option<Rules>,
    /// Where users start and whether they are jailed to their home.
    pub isolation: Isolation,
    /// Where the site root is in the storage (`/` when the storage holds only it).
    pub storage_root: VPath,
    /// Global virtual directories, visible at the user's `/` unless the isolation mode
    /// hides them.
    pub virtual_dirs: Vec<VirtualDir>,
    pub timeouts: Timeouts,
    /// Passive ports to listen on; `0..=0` lets the OS pick.
    pub passive_ports: RangeInclusive<u16>,
    /// The address advertised in 227 replies instead of the control connection's local one.
    pub external_ip: Option<Ipv4Addr>,
    /// Per client network, the address 227 advertises instead (the first match wins;
    /// before `external_ip`).
    pub pasv_addresses: Vec<PasvAddress>,
    /// Lines longer than this are refused with 500 (IIS `maxCommandLine`, 4096).
    pub max_line: usize,
    /// Whether PORT/EPRT targets must be the control peer's address (IIS
    /// `matchClientAddressForPort`); a port below 1024 is always refused.
    pub match_port_peer: bool,
    /// Whether passive data connections must come from the control peer's address.
    pub match_pasv_peer: bool,
    /// The port active-mode data connections are made from (`ConnectData::local_port`).
    pub active_source_port: ActiveSourcePort,
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
    /// A failed PASS is answered `530` this long after the PASS arrived, however quickly
    /// the check failed, so the time a refusal takes does not tell which users exist
    /// (zero: at once). The session reads no further command meanwhile.
    pub failed_login_delay: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            site_name: "default".into(),
            banner: "wharf FTP server ready".into(),
            messages: Messages::default(),
            allow_anonymous: false,
            anonymous_write: false,
            user_write: true,
            rules: None,
            isolation: Isolation::None,
            storage_root: VPath::root(),
            virtual_dirs: Vec::new(),
            timeouts: Timeouts::default(),
            passive_ports: 0..=0,
            external_ip: None,
            pasv_addresses: Vec::new(),
            max_line: 4096,
            match_port_peer: true,
            match_pasv_peer: true,
            active_source_port: ActiveSourcePort::Any,
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
            failed_login_delay: Duration::from_secs(1),
        }
    }
}
