//! wharf-core: the sans-IO FTP/FTPS protocol engine.
//!
//! Nothing in this crate performs I/O, reads a clock, spawns a thread or draws an unseeded
//! random number. A driver (a runtime, or the simulator) feeds it bytes and events and
//! carries out the [`Action`]s it emits.
//!
//! # The drain rule
//!
//! After every `handle_*` call on a [`Session`], the driver drains every `poll_*` method
//! ([`Session::poll_transmit`] + [`Session::handle_written`], [`Session::poll_action`])
//! until each returns `None`, then re-arms its timer from [`Session::poll_timeout`].
//! Nothing the core asks for happens until it is drained; nothing is lost if the driver
//! drains late.

pub mod authz;
pub mod backend;
pub mod config;
pub mod ids;
pub mod listing;
pub mod live;
pub mod log;
pub mod memfs;
pub mod monitor;
pub mod path;
pub mod policy;
pub mod ports;
pub mod proto;
pub mod proxy;
pub mod pump;
pub mod server;
pub mod session;
pub mod site;
pub mod tls;
pub mod typea;

pub use authz::{Access, Rule, Rules, Who};
pub use backend::{
    AuthError, Authenticator, Completion, DirEntry, FileKind, FsError, Metadata, NoResolver,
    OpenedFile, Principal, Request, Resolver, Storage, Upload, WriteMode,
};
pub use config::{ActiveSourcePort, ListingStyle, Messages, SessionConfig, Timeouts};
pub use ids::{DataConnId, FileHandle, RequestId, SessionId, TransferId};
pub use path::VPath;
pub use policy::IpNet;
pub use pump::{DataIo, Pump, Run};
pub use server::{Refusal, Server};
pub use session::{Action, DataError, Input, Session, TransferOutcome};
pub use site::{Binding, Isolation, PasvAddress, Sites, SitesError, VirtualDir};
pub use tls::{ClientCertificates, ControlPolicy, DataPolicy, TlsSettings};
