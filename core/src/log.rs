//! Activity logging: the record a session emits per command (with its final reply) and per
//! transfer, as [`crate::Action::Log`], for a W3C extended log writer outside the core.
//!
//! A site without logging (`SessionConfig::logging == None`) pays one branch per command;
//! with logging on, a command costs one boxed record (plus its path strings, when the
//! fields that show them are selected). The record carries no wall-clock time: the sink
//! stamps it when it receives the record, which under the drain rule is when the command
//! ended. `time_taken` is measured with the driver's `now`.
//!
//! [`SubStatus`] is the one table of reasons a request was refused; the README documents
//! it (a test keeps the two in step).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::FsError;
use crate::ids::SessionId;

macro_rules! substatus {
    ($( $(#[$m:meta])* $name:ident = $code:literal, $slug:literal, $text:literal; )*) => {
        /// Why a request failed, logged as `sc-substatus`. Numbers that IIS also uses mean
        /// what they mean in IIS (8, 9, 11, 12, 51); the others are wharf's own.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
        pub enum SubStatus {
            /// No particular reason (success, or an ordinary error the status explains).
            #[default]
            None,
            $( $(#[$m])* $name, )*
        }

        impl SubStatus {
            /// Every sub-status but `None`, in table order.
            pub const ALL: &'static [SubStatus] = &[$(SubStatus::$name),*];

            /// The number logged in `sc-substatus`.
            pub fn code(self) -> u16 {
                match self {
                    SubStatus::None => 0,
                    $( SubStatus::$name => $code, )*
                }
            }

            /// A short name, used in `x-debug`.
            pub fn slug(self) -> &'static str {
                match self {
                    SubStatus::None => "",
                    $( SubStatus::$name => $slug, )*
                }
            }

            /// What it means, as the README table says.
            pub fn description(self) -> &'static str {
                match self {
                    SubStatus::None => "no particular reason",
                    $( SubStatus::$name => $text, )*
                }
            }
        }
    };
}

substatus! {
    HiddenSegment = 8, "hidden-segment", "a hidden segment is in the path (request filtering)";
    DeniedSequence = 9, "denied-sequence", "a denied sequence is in the path as sent (request filtering)";
    ExtensionDenied = 11, "extension-denied", "the file name extension is denied (request filtering)";
    PathTooLong = 12, "path-too-long", "the path is longer than the maximum path length";
    UploadTooLarge = 13, "upload-too-large", "the upload went over the maximum upload size; it was cut and discarded";
    CommandLineTooLong = 14, "line-too-long", "the command line is longer than the maximum command line";
    PermissionDenied = 20, "permission-denied", "the user may not do this (authorization, read-only site or user)";
    IpDenied = 30, "ip-denied", "the client address is denied by the IP rules";
    PortNotClient = 31, "port-not-client", "a PORT/EPRT address is not the client's own (a NAT in front of the client that does not rewrite it, or FTP bounce)";
    PortPrivileged = 32, "port-privileged", "a PORT/EPRT port is below 1024 (FTP bounce)";
    ProxyRefused = 33, "proxy-refused", "a PROXY protocol header was missing, malformed or late, or came from an address that is not a configured load balancer";
    LogonFailed = 40, "logon-failed", "wrong user name or password";
    LogonBanned = 41, "logon-banned", "the client address is banned after repeated failed logins";
    LogonWouldBan = 42, "logon-would-ban", "the ban threshold was reached in logging-only mode (not banned)";
    AnonymousDenied = 43, "anonymous-denied", "anonymous logins are not allowed";
    LogonUnavailable = 44, "logon-unavailable", "the account store (PAM, LDAP) failed or did not answer; the login was not checked";
    TooManyConnections = 50, "too-many-connections", "the server's connection limit is reached";
    CommandDenied = 51, "command-denied", "the command is denied by command filtering";
    TooManyFromIp = 52, "too-many-from-ip", "the per-address connection limit is reached";
    TooManyForUser = 53, "too-many-for-user", "the per-user session limit is reached";
    TooManyForSite = 54, "too-many-for-site", "the site's connection limit is reached";
    TooManyHandshakes = 55, "too-many-handshakes", "the address has the most TLS handshakes in progress the server allows";
    HandshakeTimeout = 56, "handshake-timeout", "the TLS handshake did not complete within the handshake timeout";
    AdminDisconnect = 57, "admin-disconnect", "an administrator ended the session (the sessions page's disconnect)";
    TooSlow = 60, "too-slow", "the transfer ran below the minimum data rate and was dropped";
    Stalled = 61, "stalled", "the transfer made no progress for the data timeout and was dropped";
    UploadInProgress = 62, "upload-in-progress", "the file is being uploaded in place and may not be read yet";
    RenameTargetExists = 63, "rename-target-exists", "the rename target exists and replacing on rename is off";
}

/// One W3C field. The set a site logs is a [`LogFields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Date,
    Time,
    ClientIp,
    ClientPort,
    UserName,
    SiteName,
    ServerIp,
    ServerPort,
    Method,
    UriStem,
    Status,
    Win32Status,
    SubStatus,
    BytesSent,
    BytesReceived,
    TimeTaken,
    Host,
    Session,
    FullPath,
    Debug,
}

impl Field {
    /// Every field, in the order they are written.
    pub const ALL: [Field; 20] = [
        Field::Date,
        Field::Time,
        Field::ClientIp,
        Field::ClientPort,
        Field::UserName,
        Field::SiteName,
        Field::ServerIp,
        Field::ServerPort,
        Field::Method,
        Field::UriStem,
        Field::Status,
        Field::Win32Status,
        Field::SubStatus,
        Field::BytesSent,
        Field::BytesReceived,
        Field::TimeTaken,
        Field::Host,
        Field::Session,
        Field::FullPath,
        Field::Debug,
    ];

    /// The W3C/IIS identifier in the `#Fields:` directive.
    pub fn name(self) -> &'static str {
        match self {
            Field::Date => "date",
            Field::Time => "time",
            Field::ClientIp => "c-ip",
            Field::ClientPort => "c-port",
            Field::UserName => "cs-username",
            Field::SiteName => "s-sitename",
            Field::ServerIp => "s-ip",
            Field::ServerPort => "s-port",
            Field::Method => "cs-method",
            Field::UriStem => "cs-uri-stem",
            Field::Status => "sc-status",
            Field::Win32Status => "sc-win32-status",
            Field::SubStatus => "sc-substatus",
            Field::BytesSent => "sc-bytes",
            Field::BytesReceived => "cs-bytes",
            Field::TimeTaken => "time-taken",
            Field::Host => "cs-host",
            Field::Session => "x-session",
            Field::FullPath => "x-fullpath",
            Field::Debug => "x-debug",
        }
    }

    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A set of fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFields(u32);

impl LogFields {
    pub const ALL: LogFields = LogFields((1 << Field::ALL.len()) - 1);
    pub const NONE: LogFields = LogFields(0);

    pub fn with(self, f: Field) -> LogFields {
        LogFields(self.0 | 1 << f as u32)
    }

    pub fn has(self, f: Field) -> bool {
        self.0 & (1 << f as u32) != 0
    }

    /// The selected fields, in writing order.
    pub fn iter(self) -> impl Iterator<Item = Field> {
        Field::ALL.into_iter().filter(move |f| self.has(*f))
    }
}

impl Default for LogFields {
    fn default() -> Self {
        LogFields::ALL
    }
}

/// A site's logging, as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `s-sitename`, shared by every record of the site.
    pub site: Arc<str>,
    /// What to fill in; paths are only copied when a field shows them.
    pub fields: LogFields,
    /// Whether the site's records go to a W3C log file. A site may log only for the
    /// server's own observers (its log lines and metrics): then this is false.
    pub w3c: bool,
}

/// One log line's worth of facts. Empty fields are written as `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub session: SessionId,
    pub site: Arc<str>,
    /// `c-ip`/`c-port`.
    pub client: SocketAddr,
    /// `s-ip`/`s-port`.
    pub server: SocketAddr,
    /// The user name given (USER), or the logged-in user.
    pub user: Option<Arc<str>>,
    /// The HOST the client asked for.
    pub host: Option<Arc<str>>,
    /// The verb (`RETR`), or an event: `ControlChannelOpened`, `ControlChannelClosed`.
    pub method: Cow<'static, str>,
    /// `cs-uri-stem`: the path as the user sees it, or the argument (`***` for PASS).
    pub uri: Option<String>,
    /// `x-fullpath`: the path in the site (for an isolated user, below its home).
    pub full_path: Option<String>,
    /// The command's first final reply code (0: none).
    pub status: u16,
    pub win32: u32,
    pub sub: SubStatus,
    /// `sc-bytes`: reply bytes plus data bytes sent.
    pub bytes_sent: u64,
    /// `cs-bytes`: the command line plus data bytes received.
    pub bytes_received: u64,
    pub time_taken: Duration,
    /// `x-debug`: a short reason (the sub-status's slug, or an error); for
    /// `ControlChannelClosed`, how the session ended (`quit`, `client-closed`,
    /// `idle-timeout`, ...) when no sub-status says it.
    pub debug: Option<Cow<'static, str>>,
    /// The control channel was encrypted when the record was made (not a W3C field).
    pub tls: bool,
    /// A transfer's data bytes (also counted in `bytes_sent`/`bytes_received`; not a
    /// W3C field).
    pub data_bytes: u64,
    /// The record belongs in the W3C log ([`LogConfig::w3c`]); observers see every record.
    pub w3c: bool,
}

impl LogRecord {
    /// A record with only the connection facts filled in.
    pub fn new(
        session: SessionId,
        site: Arc<str>,
        client: SocketAddr,
        server: SocketAddr,
        method: Cow<'static, str>,
    ) -> LogRecord {
        LogRecord {
            session,
            site,
            client,
            server,
            user: None,
            host: None,
            method,
            uri: None,
            full_path: None,
            status: 0,
            win32: 0,
            sub: SubStatus::None,
            bytes_sent: 0,
            bytes_received: 0,
            time_taken: Duration::ZERO,
            debug: None,
            tls: false,
            data_bytes: 0,
            w3c: true,
        }
    }
}

/// Where a runtime hands the records (`Action::Log` and refusals' records). It must not
/// block: a writer that cannot keep up drops and counts.
pub trait LogSink: Send + Sync + std::fmt::Debug + 'static {
    fn log(&self, record: Box<LogRecord>);
}

/// The Windows error code IIS would log for a storage error (`sc-win32-status`).
pub fn win32_of(e: &FsError) -> u32 {
    match e {
        FsError::NotFound => 2,         // ERROR_FILE_NOT_FOUND
        FsError::PermissionDenied => 5, // ERROR_ACCESS_DENIED
        FsError::IsADirectory => 5,     // what Windows says when opening a directory
        FsError::AlreadyExists => 183,  // ERROR_ALREADY_EXISTS
        FsError::NotEmpty => 145,       // ERROR_DIR_NOT_EMPTY
        FsError::NotADirectory => 267,  // ERROR_DIRECTORY
        FsError::NoSpace => 112,        // ERROR_DISK_FULL
        FsError::BadName => 123,        // ERROR_INVALID_NAME
        FsError::Io(_) => 1117,         // ERROR_IO_DEVICE
        FsError::Unsupported(_) => 50,  // ERROR_NOT_SUPPORTED
    }
}

/// `ERROR_LOGON_FAILURE`.
pub const WIN32_LOGON_FAILURE: u32 = 1326;
/// `ERROR_NO_LOGON_SERVERS`: the account store could not check the login.
pub const WIN32_NO_LOGON_SERVERS: u32 = 1311;
/// `ERROR_OPERATION_ABORTED`.
pub const WIN32_ABORTED: u32 = 995;
/// `WSAECONNRESET`.
pub const WIN32_CONNECTION_RESET: u32 = 10054;
/// `SEC_E_ILLEGAL_MESSAGE`: TLS on a data connection failed (handshake, session binding,
/// a bad record), as Schannel reports it.
pub const WIN32_TLS_FAILURE: u32 = 0x8009_0326;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substatus_codes_are_unique_and_named() {
        let mut codes: Vec<u16> = SubStatus::ALL.iter().map(|s| s.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), SubStatus::ALL.len());
        assert!(!codes.contains(&0));
        for s in SubStatus::ALL {
            assert!(!s.slug().is_empty() && !s.slug().contains(' '));
        }
    }

    /// The README's sub-status table lists every code with its slug, and nothing else.
    #[test]
    fn readme_documents_every_substatus() {
        let readme = include_str!("../../README.md");
        for s in SubStatus::ALL {
            let row = format!("| {} | `{}` |", s.code(), s.slug());
            assert!(readme.contains(&row), "README lacks the row {row:?}");
        }
    }

    #[test]
    fn field_names_round_trip() {
        for f in Field::ALL {
            assert_eq!(Field::parse(f.name()), Some(f));
        }
        let set = LogFields::NONE.with(Field::Status).with(Field::Date);
        assert_eq!(set.iter().collect::<Vec<_>>(), [Field::Date, Field::Status]);
        assert_eq!(LogFields::ALL.iter().count(), 20);
    }
}
